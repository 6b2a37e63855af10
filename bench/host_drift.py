"""How steady is this host? One sparse and the dense model, timed alternately for a while.

    uv run python bench/host_drift.py [--model mlp1024] [--sparsity 0.4] [--seconds 60]
        [--series 3] [--block 0.5] [--threads 1] [--seed 0]

The model (random weights, exact random masks of ``--sparsity`` on every layer the profiler
profiles, each on ``csr_numba``) and its dense original run in alternating blocks of
``--block`` seconds for ``--seconds``, ``--series`` times. A timing table and a measured
speedup are only as good as the statistic they rest on: this shows which one is steady here.
Per series one JSON line: the speedup as the ratio of medians and of 10th percentiles of all
runs, the spread of the sparse model's 10-second windows (median and 10th percentile of
their blocks). Then one summary line: each ratio's range over the series. The latest figures,
and why they make ``spdy.timing.quantile`` 0.1, are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from pruneflow.models import build
from pruneflow.models.zoo import prunable_layers
from pruneflow.runtime import configure
from pruneflow.sparsity.grid import skipped_layers
from pruneflow.timing import SparseRuntime, default_batch_size, exact_mask, thread_scope
from pruneflow.timing.measure import clock_ns


def _block(fn, x: torch.Tensor, seconds: float) -> list[float]:  # noqa: ANN001
    clock, out = clock_ns(), []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = clock()
        fn(x)
        out.append((clock() - t0) / 1e6)
    return out


def _windows(blocks: list[list[float]], per: int, stat) -> list[float]:  # noqa: ANN001
    values = [stat(b) for b in blocks]
    return [round(float(np.median(values[i : i + per])), 4) for i in range(0, len(values), per)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp1024")
    parser.add_argument("--sparsity", type=float, default=0.4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--series", type=int, default=3)
    parser.add_argument("--block", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    configure(args.threads)
    torch.manual_seed(args.seed)
    model = build(args.model, 10, (1, 28, 28)).eval()
    names = prunable_layers(model)
    layers = [n for n in names if n not in skipped_layers(args.model, names, True)]
    rng = np.random.default_rng(args.seed)
    with torch.no_grad():
        for n in layers:
            w = model.get_submodule(n).weight
            w.mul_(exact_mask(w.shape, args.sparsity, rng))
    x = torch.randn(default_batch_size(args.model), 1, 28, 28)
    sparse = SparseRuntime(model, dict.fromkeys(layers, "csr_numba"))
    dense = SparseRuntime(model, "dense")
    per_window = max(1, round(10.0 / (2 * args.block)))
    ratios: dict[str, list[float]] = {"median": [], "p10": []}
    with thread_scope(args.threads), torch.inference_mode():
        for fn in (sparse, dense):
            _block(fn, x, 0.2)
        for series in range(args.series):
            d_blocks, s_blocks = [], []
            start = time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                d_blocks.append(_block(dense, x, args.block))
                s_blocks.append(_block(sparse, x, args.block))
            d, s = np.concatenate(d_blocks), np.concatenate(s_blocks)
            by = {"median": float(np.median(d) / np.median(s))}
            by["p10"] = float(np.percentile(d, 10) / np.percentile(s, 10))
            for k, v in by.items():
                ratios[k].append(v)
            line = {
                "model": args.model,
                "sparsity": args.sparsity,
                "series": series,
                "runs": int(d.size + s.size),
                "speedup_of_medians": round(by["median"], 4),
                "speedup_of_p10": round(by["p10"], 4),
                "sparse_10s_windows_median_ms": _windows(s_blocks, per_window, np.median),
                "sparse_10s_windows_p10_ms": _windows(
                    s_blocks, per_window, lambda b: np.percentile(b, 10)
                ),
            }
            print(json.dumps(line), flush=True)
    summary = {"model": args.model, "sparsity": args.sparsity, "series": args.series}
    for k, v in ratios.items():
        summary[f"speedup_of_{k}_range"] = [round(min(v), 4), round(max(v), 4)]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
