"""Does the structured timing table add up? Predicted vs measured time of random widths.

    uv run python bench/structured_additivity.py [--models resnet_mini smallcnn]
        [--profiles 8] [--rounds 3] [--seed 0] [--orders chain forward]

For each model: measure its structured timing table (default ``structured.timing`` params;
the line ``profile`` reports how long that took), then for random width profiles (a uniformly
random level per channel group, plus the uniform profiles at three levels) build the physically
thinned model (CHEX's extraction, first channels kept) and time it end to end with the table's
own discipline: ``rounds`` measurements, the table's quantile of the pooled runs.
``predicted_ms = remainder_ms + sum_g t[g, level_{g-1}, level_g]``; goal ``|measured /
predicted - 1| <= 0.05``. Because the host's speed drifts between the table's sweeps and the
check (other tenants), each profile is also timed against the dense model in alternating
passes (``measure_speedups``): ``speedup_ratio`` = measured speedup / predicted speedup is the
drift-free figure. ``--orders``: the group orders of the chain DP to compare
(:func:`pruneflow.structured.widths.chain_order` against forward order), each with its own
table, in alternating turns over the same profiles (levels drawn per group name). One JSON
object per line, the first one the host and its load; every line names its ``order``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn

from pruneflow.chex.extract import extract, keep_first
from pruneflow.chex.groups import find_groups
from pruneflow.config import StructuredTimingParams
from pruneflow.models import build
from pruneflow.structured.timing import measure_table
from pruneflow.structured.widths import Wiring, fractions, structured_groups, width_grid
from pruneflow.timing.measure import Timing, measure, measure_speedups, thread_scope
from pruneflow.timing.table import bench_host


def _groups(model: nn.Module, example: torch.Tensor, order: str) -> tuple[list, Wiring]:
    """The groups and wiring in chain order, or in forward order (the order before
    :func:`pruneflow.structured.widths.chain_order`)."""
    groups, wiring = structured_groups(model, example)
    if order == "forward":
        by_name = {g.name: g for g in groups}
        groups = [by_name[g.name] for g in find_groups(model, example)]
        wiring = Wiring(wiring.inputs, wiring.outputs, {g.name: i for i, g in enumerate(groups)})
    return groups, wiring


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet_mini", "smallcnn"])
    ap.add_argument("--profiles", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--orders", nargs="+", default=["chain", "forward"], choices=["chain", "forward"]
    )
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    print(json.dumps({"host": bench_host()}), flush=True)
    cfg = StructuredTimingParams()
    shape = (1, 28, 28)
    for name in args.models:
        model = build(name, 10, shape).eval()
        example = torch.zeros(1, *shape)
        grid = fractions(10, 0.1)
        tables = {}
        for order in args.orders:
            groups, wiring = _groups(model, example, order)
            widths = width_grid(groups, grid, 1)
            t0 = time.perf_counter()
            table = measure_table(model, name, groups, wiring, widths, grid, shape, cfg)
            tables[order] = (groups, widths, table)
            print(
                json.dumps(
                    {
                        "model": name,
                        "order": order,
                        "groups": [g.name for g in groups],
                        "figure": "profile",
                        "seconds": round(time.perf_counter() - t0, 1),
                        "cpu_seconds": round(float(table.meta["cpu_seconds"]), 1),
                        "levels": len(grid),
                        "dense_ms": round(table.dense_total_ms, 3),
                        "remainder_ms": round(table.remainder_ms, 3),
                        "max_speedup": round(table.max_speedup(), 3),
                        "load": os.getloadavg()[0],
                    }
                ),
                flush=True,
            )
        # profiles drawn per group name in forward order, so that a seed gives the same
        # profiles whichever orders are compared
        forward, _ = _groups(model, example, "forward")
        names = [g.name for g in forward]
        rng = np.random.Generator(np.random.PCG64(args.seed))
        profiles = [dict.fromkeys(names, s) for s in (3, 6, 9)]
        profiles += [
            dict(zip(names, (int(v) for v in rng.integers(0, len(grid), len(names))), strict=True))
            for _ in range(args.profiles)
        ]
        x = torch.randn(cfg.batch_size, *shape, generator=torch.Generator().manual_seed(1))
        errors = {o: [] for o in args.orders}
        raw_errors = {o: [] for o in args.orders}
        for by_name in profiles:
            groups, widths, _ = tables[args.orders[0]]
            counts = {g.name: int(widths[i, by_name[g.name]]) for i, g in enumerate(groups)}
            thin = extract(model, groups, keep_first(groups, counts), example).eval()
            with thread_scope(cfg.threads), torch.no_grad():
                runs = [
                    measure(
                        lambda m=thin, x=x: m(x),
                        warmup=cfg.warmup,
                        min_repeats=cfg.min_repeats,
                        max_repeats=cfg.max_repeats,
                        rel_tol=cfg.rel_tol,
                        max_seconds=cfg.max_seconds,
                    )
                    for _ in range(args.rounds)
                ]
                (speedup,) = measure_speedups(
                    lambda model=model, x=x: model(x),
                    [lambda m=thin, x=x: m(x)],
                    repeats=30,
                    passes=3,
                    quantile=cfg.quantile,
                )
            measured = Timing.pooled(runs).quantile(cfg.quantile)
            for order in args.orders:
                groups, _, table = tables[order]
                levels = [by_name[g.name] for g in groups]
                predicted = table.predict_ms(levels)
                ratio = measured / predicted
                speedup_ratio = speedup / (table.dense_total_ms / predicted)
                errors[order].append(abs(speedup_ratio - 1))
                raw_errors[order].append(abs(ratio - 1))
                print(
                    json.dumps(
                        {
                            "model": name,
                            "order": order,
                            "levels": {n: by_name[n] for n in names},
                            "predicted_ms": round(predicted, 3),
                            "measured_ms": round(measured, 3),
                            "ratio": round(ratio, 4),
                            "predicted_speedup": round(table.dense_total_ms / predicted, 3),
                            "measured_speedup": round(speedup, 3),
                            "speedup_ratio": round(speedup_ratio, 4),
                        }
                    ),
                    flush=True,
                )
        for order in args.orders:
            err, raw = errors[order], raw_errors[order]
            print(
                json.dumps(
                    {
                        "model": name,
                        "order": order,
                        "figure": "additivity",
                        "max_abs_time_error": round(max(raw), 4),
                        "median_abs_time_error": round(float(np.median(raw)), 4),
                        "max_abs_error": round(max(err), 4),
                        "median_abs_error": round(float(np.median(err)), 4),
                        "within_5pct": int(sum(e <= 0.05 for e in err)),
                        "profiles": len(err),
                        "load": os.getloadavg()[0],
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
