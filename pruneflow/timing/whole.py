"""The timing table of a model the runtime runs whole (backend ``torch_whole``).

A model :class:`~pruneflow.timing.runtime.SparseRuntime` cannot take apart runs as one torch
module with its masks multiplied into the weights. Zeros in a dense kernel's weights cost the
same time as any other value, so a masked layer is as slow as a dense one: the honest table
gives every layer the same time at every level, and every profile predicts 1x. Its rows say
so (``backend`` = ``torch_whole``) and so does its metadata (``whole_model``: the reason).

No layer can be timed on its own inside a model that does not run layer by layer: the whole
model's measured time is attributed to the profiled layers by their weight counts (over every
prunable layer, so the skipped ones' share stays in the remainder). The split is nominal; it
moves no prediction, as no level is faster than another.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from pruneflow.timing.measure import Timing, measure
from pruneflow.timing.runtime import WHOLE_MODEL, SparseRuntime
from pruneflow.timing.table import FORMAT, host_description

__all__ = ["whole_model_table"]


def whole_model_table(
    rt: SparseRuntime,
    model_name: str,
    names: Sequence[str],
    profiled: Sequence[str],
    skipped: Sequence[str],
    levels: Sequence[float],
    x: torch.Tensor,
    *,
    threads: int,
    quantile: float,
    repeats: tuple[int, int],
    max_seconds: float,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``(table, metadata)`` of ``rt`` (a runtime with ``rt.whole`` set), timed whole on
    ``x`` in the profiler's schema; call it inside the profiler's thread scope."""
    started = time.perf_counter()
    total: Timing = measure(
        lambda: rt(x),
        warmup=2,
        min_repeats=repeats[0],
        max_repeats=repeats[1],
        max_seconds=max_seconds,
    )
    modules = dict(rt.net.named_modules())
    counts = {n: int(modules[n].weight.numel()) for n in names}
    everything = sum(counts.values())
    rows: list[dict[str, Any]] = []
    for name in profiled:
        share = counts[name] / everything
        op = "conv2d" if isinstance(modules[name], nn.Conv2d) else "linear"
        for level, sparsity in enumerate(levels):
            rows.append(
                {
                    "layer": name,
                    "layer_index": list(names).index(name),
                    "op": op,
                    "level": level,
                    "sparsity": sparsity,
                    "backend": WHOLE_MODEL,
                    "device": "cpu",
                    "threads": threads,
                    "batch_size": int(x.shape[0]),
                    "time_ms": total.quantile(quantile) * share,
                    "time_ms_p10": total.p10_ms * share,
                    "time_ms_p90": total.p90_ms * share,
                    "repeats": total.repeats,
                }
            )
    table = pd.DataFrame(rows)
    for col in ("layer_index", "level", "threads", "batch_size", "repeats"):
        table[col] = table[col].astype("int64")
    dense_total = total.quantile(quantile)
    prunable = float(table.loc[table["level"] == 0, "time_ms"].sum())
    meta = {
        "format": FORMAT,
        "model": model_name,
        "layers": list(profiled),
        "all_layers": list(names),
        "skipped_layers": list(skipped),
        "levels": list(levels),
        "batch_size": int(x.shape[0]),
        "in_shape": list(x.shape[1:]),
        "threads": threads,
        "device": "cpu",
        "host": host_description(threads),
        "backends": [WHOLE_MODEL],
        "whole_model": rt.whole,
        "quantile": quantile,
        "dense_total_ms": dense_total,
        "dense_total_p10_ms": total.p10_ms,
        "dense_total_p90_ms": total.p90_ms,
        "torch_dense_total_ms": total.median_ms,
        "prunable_dense_ms": prunable,
        "remainder_ms": dense_total - prunable,
        "bn_folded": False,
        "fused_relu": [],
        "fused_pool": [],
        "seed": seed,
        "profile_seconds": time.perf_counter() - started,
    }
    return table, meta
