"""The timing table: its schema, host description, Parquet I/O and the sums SPDY needs.

One row per (profiled layer, grid level): the time of the fastest backend there (``time_ms``:
the metadata's ``quantile`` of its runs pooled over the rounds; ``time_ms_p10``/``_p90``: spread).
The file's metadata says where and how it was measured, and what the end-to-end dense time
and the fixed remainder are; :func:`read_timing_table` refuses a table measured for another
model, another layer list or another host than the caller asks for.

Accounting (SPDY's fixed remainder, with the skipped layers moved into it): ``remainder_ms =
dense_total_ms - sum of the profiled layers' dense times``. Layers left dense on purpose
(first/last) are *not* profiled and are part of the remainder, so ``remainder + sum of chosen
levels' times`` predicts the whole model's time.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd
import torch

from pruneflow.config import cpu_capability
from pruneflow.errors import PruneflowError
from pruneflow.io import parquet_metadata, read_parquet, write_parquet

__all__ = [
    "COLUMNS",
    "FORMAT",
    "bench_host",
    "host_description",
    "predict_ms",
    "read_timing_table",
    "time_matrix",
    "validate_timing_table",
    "write_timing_table",
]

FORMAT = "pruneflow.timing/1"

# column -> accepted dtype kinds (pandas ``dtype.kind``), in file order
COLUMNS: dict[str, str] = {
    "layer": "O",
    "layer_index": "iu",
    "op": "O",
    "level": "iu",
    "sparsity": "f",
    "backend": "O",
    "device": "O",
    "threads": "iu",
    "batch_size": "iu",
    "time_ms": "f",
    "time_ms_p10": "f",
    "time_ms_p90": "f",
    "repeats": "iu",
}

# the range of a layer's time as a share of the dense model's (validate_timing_table)
PLAUSIBLE_SHARE = (1e-7, 10.0)
REQUIRED_META = (
    "format",
    "model",
    "layers",
    "all_layers",
    "skipped_layers",
    "levels",
    "batch_size",
    "threads",
    "device",
    "host",
    "dense_total_ms",
    "prunable_dense_ms",
    "remainder_ms",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_description(threads: int) -> dict[str, Any]:
    """What a timing depends on: CPU model, architecture, torch/numba versions, threads."""
    return {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "numba": numba.__version__,
        "threads": int(threads),
    }


def bench_host(threads: int = 1) -> dict[str, Any]:
    """What a benchmark's figures depend on: :func:`host_description` plus torch's CPU
    capability (AVX2 or AVX-512), ``nproc`` and the load average at the start."""
    return {
        **host_description(threads),
        "capability": cpu_capability(),
        "nproc": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }


def validate_timing_table(table: pd.DataFrame, meta: Mapping[str, Any], where: str = "") -> None:
    """Schema and consistency checks shared by the writer and the reader."""
    at = f" in {where}" if where else ""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise PruneflowError(f"timing table{at} lacks columns: {', '.join(missing)}")
    for col, kinds in COLUMNS.items():
        if table[col].dtype.kind not in kinds:
            raise PruneflowError(
                f"timing table{at}: column '{col}' has dtype {table[col].dtype}, "
                f"expected kind {kinds!r}"
            )
    absent = [k for k in REQUIRED_META if k not in meta]
    if absent:
        raise PruneflowError(f"timing table{at} lacks metadata: {', '.join(absent)}")
    levels, layers = list(meta["levels"]), list(meta["layers"])
    if sorted(set(table["layer"])) != sorted(layers):
        raise PruneflowError(
            f"timing table{at}: rows are for layers {sorted(set(table['layer']))}, "
            f"metadata lists {layers}"
        )
    bad = table[(table["level"] < 0) | (table["level"] >= len(levels))]
    if len(bad):
        raise PruneflowError(
            f"timing table{at}: level {int(bad['level'].iloc[0])} out of range 0..{len(levels) - 1}"
        )
    if table.duplicated(["layer", "level"]).any() or len(table) != len(layers) * len(levels):
        raise PruneflowError(
            f"timing table{at}: expected exactly one row per layer and level "
            f"({len(layers)} x {len(levels)}), got {len(table)} rows"
        )
    if not np.isfinite(table["time_ms"]).all() or (table["time_ms"] < 0).any():
        raise PruneflowError(f"timing table{at}: time_ms must be finite and >= 0")
    dense = meta["dense_total_ms"]
    if not isinstance(dense, int | float) or not np.isfinite(dense) or dense <= 0:
        raise PruneflowError(f"timing table{at}: dense_total_ms must be a positive time")
    # a layer at any sparsity takes a share of the dense model's time, not 1e-300 of it nor
    # ten times all of it: one flipped bit of a float64's exponent lands there
    ratio = table["time_ms"] / dense
    implausible = table[(ratio < PLAUSIBLE_SHARE[0]) | (ratio > PLAUSIBLE_SHARE[1])]
    if len(implausible):
        row = implausible.iloc[0]
        raise PruneflowError(
            f"timing table{at}: layer {row['layer']} at level {int(row['level'])} takes "
            f"{row['time_ms']:.3g} ms against {dense:.3g} ms for the dense model: not a "
            "plausible time (a damaged file?); profile again (`pruneflow profile --force`)"
        )


def write_timing_table(
    path: str | os.PathLike[str], table: pd.DataFrame, meta: Mapping[str, Any]
) -> Path:
    """Validate and write ``table`` (columns :data:`COLUMNS`) with ``meta`` to Parquet."""
    validate_timing_table(table, meta, str(path))
    frame = table[list(COLUMNS)].reset_index(drop=True)
    return write_parquet(path, frame, dict(meta))


def read_timing_table(
    path: str | os.PathLike[str],
    model_name: str,
    layer_names: Sequence[str],
    host: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a timing table measured for ``model_name`` with these layers (and ``host``).

    ``layer_names`` is either the profiled layers or the model's full prunable-layer list
    (then the table's skipped layers must be exactly the missing ones). ``host``: keys of
    :func:`host_description` that must match (e.g. ``host_description(threads=1)``); None
    accepts any host. Returns ``(table, metadata)``.
    """
    frame = read_parquet(path, COLUMNS)
    meta = parquet_metadata(path)
    if meta.get("format") != FORMAT:
        raise PruneflowError(
            f"{path} is not a pruneflow timing table (format {meta.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    if meta.get("model") != model_name:
        raise PruneflowError(
            f"{path} was measured for model '{meta.get('model')}', not '{model_name}'"
        )
    wanted = list(layer_names)
    if wanted not in (list(meta.get("layers", [])), list(meta.get("all_layers", []))):
        raise PruneflowError(
            f"{path}: layer list differs: the table has {meta.get('layers')} "
            f"(skipped: {meta.get('skipped_layers')}), asked for {wanted}"
        )
    if host is not None:
        recorded = meta.get("host", {})
        diff = {k: (recorded.get(k), v) for k, v in host.items() if recorded.get(k) != v}
        if diff:
            detail = "; ".join(f"{k}: table {a!r} vs here {b!r}" for k, (a, b) in diff.items())
            raise PruneflowError(
                f"{path} was measured on another host ({detail}): its plan's speedups hold "
                "there, not here. Measure them on that host (its profile-<hardware> work pool), "
                "or profile this host (`pruneflow profile --force`) and search again"
            )
    validate_timing_table(frame, meta, str(path))
    return frame, meta


def time_matrix(table: pd.DataFrame, layers: Sequence[str] | None = None) -> np.ndarray:
    """Times in ms as a ``[layers, levels]`` array (layer order: ``layers`` or the table's)."""
    order = list(layers) if layers is not None else list(dict.fromkeys(table["layer"]))
    wide = table.pivot(index="layer", columns="level", values="time_ms")
    missing = [n for n in order if n not in wide.index]
    if missing:
        raise PruneflowError(f"timing table has no rows for layers: {', '.join(missing)}")
    wide = wide.loc[order].sort_index(axis=1)
    if wide.isna().any().any():
        raise PruneflowError("timing table is missing some (layer, level) entries")
    return wide.to_numpy(dtype=np.float64)


def predict_ms(table: pd.DataFrame, meta: Mapping[str, Any], profile: Mapping[str, int]) -> float:
    """Predicted end-to-end time: the remainder plus each layer's time at its level index.

    ``profile`` maps every profiled layer to a level index (0 = dense).
    """
    layers = list(meta["layers"])
    nlev = len(meta["levels"])
    missing = [n for n in layers if n not in profile]
    extra = [n for n in profile if n not in layers]
    if missing or extra:
        raise PruneflowError(
            f"profile must give a level for exactly the table's layers; missing {missing}, "
            f"unknown {extra}"
        )
    times = time_matrix(table, layers)
    total = float(meta["remainder_ms"])
    for i, name in enumerate(layers):
        level = profile[name]
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
            raise PruneflowError(f"level of '{name}' must be an integer index, got {level!r}")
        if not 0 <= level < nlev:
            raise PruneflowError(f"level {level} of '{name}' out of range 0..{nlev - 1}")
        total += float(times[i, int(level)])
    return total
