"""Does the timing table add up? Predicted vs measured end-to-end time of random profiles.

    uv run python bench/timing_additivity.py [--models mlp1024 smallcnn resnet18_cifar]
        [--profiles 5] [--threads 1] [--tables DIR] [--seed 0] [--steps 40]
        [--backends dense direct_numba csr_numba csr] [--quantile 0.1] [--min-seconds 60]
        [--breakdown]

For each model: profile it (or read ``DIR/<model>.parquet`` when ``--tables`` holds one for
this host), then for several random profiles (a uniformly random level per profiled layer)
prune a copy of the model to that profile with exact random masks, convert it with
``SparseRuntime.from_table`` (each layer on the backend the table chose at its level) and
time it end to end. ``predicted_ms = remainder_ms + sum of the table's entries``.
Goal: ``|ratio - 1| <= 0.1`` with ``ratio = measured_ms / predicted_ms``. The table is
profiled with the pipeline's defaults (``spdy.timing``: ``--quantile``, ``--min-seconds``), and
every measured time is the same quantile of its runs as the table's entries.

A shared host's speed drifts over minutes, and the table was measured minutes before the
profiles run, so ``ratio`` carries the host's drift as well as the sum's error. Each line
therefore also gives ``speedup_ratio``: the profile's speedup over the dense model, measured
in alternating blocks in the same minute (``measure_speedups``), over the predicted speedup
``dense_total_ms / predicted_ms``. A common slowdown of the host cancels there; what is left
is the error of the additive model. ``uniform_ratio`` does the same against a reference of
sparse layers: the model with every profiled layer at the profile's median level (what one of
the profiler's sweeps looked like before they mixed levels), measured in alternating blocks
with the profile; sparse kernels drift with the host's load more than dense GEMM, so this
reference cancels more of the drift where the profile is mostly sparse.

Inputs: mlp1024 and smallcnn on 1x28x28 at their default profiling batch sizes,
resnet18_cifar on 3x32x32 at batch 8. Prints one JSON object per line (and a header line with
the host's load average, since the timings are only as quiet as the host). ``--steps`` and
``--backends``: a coarser grid and fewer backends, for a profile that fits a busy host's time
(the defaults are the profile step's: 40 steps, every available backend). ``--breakdown``:
per profile, one more line from an in-situ sweep of the same runtime (every profiled layer
timed inside the forward passes, as the profiler does): each layer's measured time over its
table entry, and the time outside the layers over ``remainder_ms``: where the sum loses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pruneflow.config import TimingParams
from pruneflow.models import build
from pruneflow.sparsity.grid import sparsity_grid
from pruneflow.timing import (
    ProfileSettings,
    SparseRuntime,
    default_batch_size,
    exact_mask,
    host_description,
    measure,
    measure_speedups,
    predict_ms,
    profile_model,
    read_timing_table,
    thread_scope,
    time_matrix,
    write_timing_table,
)
from pruneflow.timing.insitu import InSitu, SweepSettings

SHAPES = {"resnet18_cifar": (3, 32, 32)}
DEFAULTS = TimingParams()  # the profile step's settings (params.yaml spdy.timing)
BATCH = {"resnet18_cifar": 8}


def _table(name: str, model: torch.nn.Module, args: argparse.Namespace):  # noqa: ANN202
    shape = SHAPES.get(name, (1, 28, 28))
    batch = BATCH.get(name, default_batch_size(name))
    path = Path(args.tables) / f"{name}.parquet" if args.tables else None
    if path is not None and path.is_file():
        from pruneflow.models.zoo import prunable_layers

        return read_timing_table(
            path, name, prunable_layers(model), host=host_description(args.threads)
        )
    settings = ProfileSettings(
        batch_size=batch,
        threads=args.threads,
        seed=args.seed,
        levels=sparsity_grid(steps=args.steps),
        backends=args.backends,
        warmup=DEFAULTS.warmup,
        min_repeats=DEFAULTS.min_repeats,
        max_repeats=DEFAULTS.max_repeats,
        rel_tol=DEFAULTS.rel_tol,
        max_seconds=DEFAULTS.max_seconds,
        rounds=DEFAULTS.rounds,
        quantile=args.quantile,
        min_seconds=args.min_seconds,
        max_rounds=DEFAULTS.max_rounds,
        smooth_window=DEFAULTS.smooth_window,
    )
    table, meta = profile_model(model, name, in_shape=shape, settings=settings)
    if path is not None:
        write_timing_table(path, table, meta)
    return table, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mlp1024", "smallcnn", "resnet18_cifar"])
    parser.add_argument("--profiles", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tables", default=None, help="folder to read/write timing tables")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=40, help="sparsity grid steps")
    parser.add_argument("--backends", nargs="+", default=None, help="default: all available")
    parser.add_argument("--quantile", type=float, default=DEFAULTS.quantile)
    parser.add_argument("--min-seconds", type=float, default=DEFAULTS.min_seconds)
    parser.add_argument("--breakdown", action="store_true", help="per-layer in-situ lines")
    args = parser.parse_args()
    print(json.dumps({"host": host_description(args.threads), "loadavg": os.getloadavg()}))
    for name in args.models:
        torch.manual_seed(args.seed)
        shape = SHAPES.get(name, (1, 28, 28))
        model = build(name, 10, shape).eval()
        t0 = time.perf_counter()
        table, meta = _table(name, model, args)
        profile_s = time.perf_counter() - t0
        x = torch.randn(meta["batch_size"], *shape, generator=torch.Generator().manual_seed(1))
        rng = np.random.default_rng([args.seed, 7])
        dense = SparseRuntime(model, "dense")
        nlev = len(meta["levels"])
        for k in range(args.profiles):
            profile = {n: int(rng.integers(0, nlev)) for n in meta["layers"]}
            masks = {
                n: exact_mask(model.get_submodule(n).weight.shape, meta["levels"][lv], rng)
                for n, lv in profile.items()
            }
            rt = SparseRuntime.from_table(model, table, masks=masks)
            median = int(np.median(list(profile.values())))
            uniform = dict.fromkeys(profile, median)
            uni_rt = SparseRuntime.from_table(
                model,
                table,
                masks={
                    n: exact_mask(model.get_submodule(n).weight.shape, meta["levels"][lv], rng)
                    for n, lv in uniform.items()
                },
            )
            q = float(meta["quantile"])
            with thread_scope(args.threads):
                measured = measure(
                    lambda rt=rt, x=x: rt(x),
                    warmup=3,
                    min_repeats=15,
                    max_repeats=60,
                    max_seconds=3.0,
                )
            predicted = predict_ms(table, meta, profile)
            with thread_scope(args.threads), torch.no_grad():
                (speedup,) = measure_speedups(
                    lambda x=x, d=dense: d(x),
                    [lambda rt=rt, x=x: rt(x)],
                    repeats=30,
                    passes=3,
                    min_block_seconds=0.3,
                    quantile=q,
                )
                (vs_uniform,) = measure_speedups(
                    lambda x=x, u=uni_rt: u(x),
                    [lambda rt=rt, x=x: rt(x)],
                    repeats=30,
                    passes=3,
                    min_block_seconds=0.3,
                    quantile=q,
                )
            uni_predicted = predict_ms(table, meta, uniform)
            print(
                json.dumps(
                    {
                        "model": name,
                        "profile": k,
                        "batch_size": meta["batch_size"],
                        "threads": args.threads,
                        "predicted_ms": round(predicted, 4),
                        "quantile": q,
                        "measured_ms": round(measured.quantile(q), 4),
                        "measured_p10_ms": round(measured.p10_ms, 4),
                        "measured_p90_ms": round(measured.p90_ms, 4),
                        "ratio": round(measured.quantile(q) / predicted, 4),
                        "measured_speedup": round(speedup, 4),
                        "predicted_speedup": round(meta["dense_total_ms"] / predicted, 4),
                        "speedup_ratio": round(speedup * predicted / meta["dense_total_ms"], 4),
                        "uniform_level": median,
                        "uniform_ratio": round(vs_uniform * predicted / uni_predicted, 4),
                        "dense_total_ms": round(meta["dense_total_ms"], 4),
                        "remainder_ms": round(meta["remainder_ms"], 4),
                        "mean_sparsity": round(
                            float(np.mean([meta["levels"][v] for v in profile.values()])), 4
                        ),
                        "backends": sorted(set(rt.backends.values())),
                        "profile_s": round(profile_s, 1) if k == 0 else None,
                        "loadavg_1m": round(os.getloadavg()[0], 2),
                    }
                )
            )
            sys.stdout.flush()
            if args.breakdown:
                _breakdown(name, k, rt, table, meta, profile, x, args.threads)


def _breakdown(name, k, rt, table, meta, profile, x, threads) -> None:  # noqa: ANN001
    """Each layer's in-situ time over its table entry, and the remainder's."""
    times = time_matrix(table, list(meta["layers"]))
    session = InSitu(rt, list(meta["layers"]), x)
    with thread_scope(threads):
        result = session.sweep(SweepSettings(warmup=3, min_repeats=15, max_repeats=40))
    session.remove()
    layers = {}
    for i, n in enumerate(meta["layers"]):
        t = result.layers[n]
        entry = float(times[i, profile[n]])
        layers[n] = {
            "level": profile[n],
            "backend": rt.backends[n],
            "table_ms": round(entry, 4),
            "insitu_ms": round(t.median_ms, 4) if t is not None else None,
            "ratio": round(t.median_ms / entry, 3) if t is not None else None,
        }
    print(
        json.dumps(
            {
                "kind": "breakdown",
                "model": name,
                "profile": k,
                "total_ms": round(result.total.median_ms, 4),
                "outside_ms": round(result.remainder.median_ms, 4),
                "remainder_ms": round(meta["remainder_ms"], 4),
                "layers": layers,
                "loadavg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
