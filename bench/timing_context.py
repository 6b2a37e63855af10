"""Does a timing table predict a layer beside neighbours at other levels? Mixed vs uniform.

    uv run python bench/timing_context.py --tables A.parquet [B.parquet ...] [--model mlp1024]
        [--level 7] [--threads 1] [--seed 3]

For ``--model`` (the tables' model, profiled by ``bench/timing_additivity.py --tables DIR``):
build the model with every profiled layer at grid level ``--level`` (the reference) and mixed
profiles around it: each layer in turn dense, or at the first sparse level (CSR's heaviest),
the others at the reference level; every layer at the first sparse level; two random profiles.
All run as ``SparseRuntime.from_table`` (the first table's backends), timed against the
reference in alternating blocks in one process (``measure_speedups`` at the first table's
quantile), so that the host's drift cancels. Per profile and table: measured time ratio over
the table's predicted ratio ``predict_ms(profile) / predict_ms(reference)``. A table whose
entries were timed with every layer at one level misses what a dense or heavy neighbour does
to a sparse layer and to the ops outside the layers (docs/timing.md). One JSON line per
profile, one summary line per table.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

from pruneflow.models import build
from pruneflow.models.zoo import prunable_layers
from pruneflow.timing import (
    SparseRuntime,
    exact_mask,
    host_description,
    measure_speedups,
    predict_ms,
    read_timing_table,
    thread_scope,
)

SHAPES = {"resnet18_cifar": (3, 32, 32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", required=True)
    parser.add_argument("--model", default="mlp1024")
    parser.add_argument("--level", type=int, default=7, help="the reference's grid level")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    print(json.dumps({"host": host_description(args.threads), "loadavg": os.getloadavg()}))
    torch.manual_seed(0)
    shape = SHAPES.get(args.model, (1, 28, 28))
    model = build(args.model, 10, shape).eval()
    names = prunable_layers(model)
    tables = [read_timing_table(p, args.model, names) for p in args.tables]
    table, meta = tables[0]
    layers, levels = list(meta["layers"]), meta["levels"]
    ref = args.level
    profiles: dict[str, list[int]] = {"reference": [ref] * len(layers)}
    for i, n in enumerate(layers):
        for li, what in ((0, "dense"), (1, "heavy")):
            profiles[f"{n} {what}"] = [li if j == i else ref for j in range(len(layers))]
    profiles["all heavy"] = [1] * len(layers)
    rng = np.random.default_rng(args.seed)
    for k in range(2):
        profiles[f"random {k}"] = [int(v) for v in rng.integers(0, len(levels), len(layers))]
    x = torch.randn(int(meta["batch_size"]), *shape, generator=torch.Generator().manual_seed(1))
    runtimes = {}
    for key, lv in profiles.items():
        masks = {
            n: exact_mask(model.get_submodule(n).weight.shape, levels[li], rng)
            for n, li in zip(layers, lv, strict=True)
            if li > 0
        }
        runtimes[key] = SparseRuntime.from_table(model, table, masks=masks)
    keys = [k for k in profiles if k != "reference"]
    with thread_scope(args.threads), torch.no_grad():
        speedups = measure_speedups(
            lambda: runtimes["reference"](x),
            [lambda k=k: runtimes[k](x) for k in keys],
            repeats=40,
            passes=4,
            min_block_seconds=0.3,
            quantile=float(meta["quantile"]),
        )
    errors: dict[str, list[float]] = {p: [] for p in args.tables}
    for key, s in zip(keys, speedups, strict=True):
        line = {"profile": key, "levels": profiles[key], "measured_time_ratio": round(1 / s, 4)}
        for path, (t, m) in zip(args.tables, tables, strict=True):
            at = dict(zip(layers, profiles[key], strict=True))
            base = dict(zip(layers, profiles["reference"], strict=True))
            ratio = (1 / s) / (predict_ms(t, m, at) / predict_ms(t, m, base))
            line[path] = round(ratio, 4)
            errors[path].append(ratio)
        print(json.dumps(line))
    for path, r in errors.items():
        a = np.asarray(r)
        print(
            json.dumps(
                {
                    "table": path,
                    "min": round(float(a.min()), 4),
                    "max": round(float(a.max()), 4),
                    "mean_abs_error": round(float(np.abs(a - 1).mean()), 4),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
            )
        )


if __name__ == "__main__":
    main()
