"""Does the DP's choice keep its promise? Measured speedup of DP-chosen profiles vs target.

    uv run python bench/spdy_speedup.py [--models smallcnn] [--targets 1.5 2 2.5 3]
        [--candidates 8] [--tables DIR] [--rounds R] [--repeats 60] [--seed 0]

Random profiles (``bench/timing_additivity.py``) check that the timing table adds up on
average. SPDY's guarantee is about something harder: the profiles the DP *chooses*. The DP
picks, per layer, the levels that look cheapest for their error, so a level that happened to be
timed in a quiet moment (a dip in the table) is picked more often than its neighbours, and the
chosen profiles run slower than predicted (a winner's curse). This bench measures exactly that,
without the training around it:

For each model: profile it on a batch of mnist5k images (or read ``DIR/<model>.parquet`` when
it holds one for this host; a fresh profile is written there). For each target: the DP over the
table with ``--candidates`` random sensitivity vectors ``c ~ U[0, 1]^L`` (the search's random
phase, error prior ``c_l (i / (|S| - 1))^2``) plus the uniform profile; for each distinct
profile, exact random masks on the model, ``SparseRuntime.from_table``, and the dense and the
pruned runtime timed alternately, all profiles in several passes (``measure_speedups``), as
``spdy_results`` does.

One JSON line per profile (``ratio`` = measured speedup / target; the guarantee is >= 0.95
for the DP's profiles), then one summary line per model and target, and one per model
(``min_dp_ratio``, ``mean_dp_ratio``, ``mean_measured_over_predicted``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from pruneflow.config import TimingParams
from pruneflow.data import load_dataset
from pruneflow.models.zoo import build, prunable_layers
from pruneflow.runtime import configure
from pruneflow.spdy.baselines import uniform_profile
from pruneflow.spdy.dp import DPSolver, discretize
from pruneflow.spdy.search import errors_from_c
from pruneflow.timing import (
    ProfileSettings,
    SparseRuntime,
    default_batch_size,
    exact_mask,
    host_description,
    measure_speedups,
    profile_model,
    read_timing_table,
    thread_scope,
    time_matrix,
    write_timing_table,
)


def _table(name, model, x, args):  # noqa: ANN001, ANN202
    path = Path(args.tables) / f"{name}.parquet" if args.tables else None
    if path is not None and path.is_file():
        return read_timing_table(
            path, name, prunable_layers(model), host=host_description(args.threads)
        )
    rounds = {"rounds": args.rounds} if args.rounds is not None else {}
    settings = ProfileSettings(
        threads=args.threads, seed=args.seed, min_seconds=args.min_seconds, **rounds
    )
    table, meta = profile_model(model, name, calib=x, settings=settings)
    if path is not None:
        write_timing_table(path, table, meta)
    return table, meta


def _profiles(times, meta, target, args, rng):  # noqa: ANN001, ANN202
    """Distinct DP profiles for random c, and the uniform profile: [(kind, levels)]."""
    disc = discretize(
        times, float(meta["dense_total_ms"]), float(times[:, 0].sum()), target, buckets=10_000
    )
    solver = DPSolver(disc.times, disc.budget)
    seen, out = set(), []
    for _ in range(args.candidates):
        levels = solver.solve(errors_from_c(rng.random(times.shape[0]), times.shape[1])).levels
        if tuple(levels) not in seen:
            seen.add(tuple(levels))
            out.append(("dp", np.asarray(levels)))
    out.append(("uniform", uniform_profile(disc.times, disc.budget)))
    return disc, out


def _speedups(dense, runtimes, x, threads: int, args) -> list[float]:  # noqa: ANN001
    with thread_scope(threads), torch.inference_mode():
        return measure_speedups(
            lambda: dense(x),
            [lambda rt=rt: rt(x) for rt in runtimes],
            repeats=args.repeats,
            passes=args.passes,
            min_block_seconds=args.block_seconds,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["smallcnn"])
    parser.add_argument("--targets", nargs="+", type=float, default=[1.5, 2.0, 2.5, 3.0])
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--tables", default=None, help="folder to read/write timing tables")
    parser.add_argument("--rounds", type=int, default=None, help="profiler rounds (default)")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=TimingParams().min_seconds,
        help="profile at least this long, adding rounds (params.yaml's default)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=60, help="timed runs per profile")
    parser.add_argument("--passes", type=int, default=5, help="passes over the profiles")
    parser.add_argument("--block-seconds", type=float, default=0.25, help="least time per block")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    configure(args.threads, True)
    print(json.dumps({"host": host_description(args.threads), "loadavg": os.getloadavg()}))
    data = load_dataset("mnist5k")
    for name in args.models:
        torch.manual_seed(args.seed)
        model = build(name, data.num_classes, data.in_shape).eval()
        x = data.images(np.arange(default_batch_size(name)))
        t0 = time.perf_counter()
        table, meta = _table(name, model, x, args)
        profile_s = time.perf_counter() - t0
        layers, grid = list(meta["layers"]), list(meta["levels"])
        times = time_matrix(table, layers)
        dense = SparseRuntime(model, "dense")
        rng = np.random.default_rng([args.seed, 11])
        plans = []  # (target, kind, levels, predicted, runtime)
        for target in args.targets:
            disc, profiles = _profiles(times, meta, target, args, rng)
            for kind, levels in profiles:
                masks = {
                    n: exact_mask(model.get_submodule(n).weight.shape, grid[lv], rng)
                    for n, lv in zip(layers, levels, strict=True)
                }
                pruned = SparseRuntime.from_table(model, table, masks=masks)
                plans.append((target, kind, levels, disc.predicted_speedup(levels), pruned))
        speedups = _speedups(dense, [plan[-1] for plan in plans], x, int(meta["threads"]), args)
        dp_ratios, over_pred = [], []
        for (target, kind, levels, predicted, _), measured in zip(plans, speedups, strict=True):
            print(
                json.dumps(
                    {
                        "model": name,
                        "target": target,
                        "kind": kind,
                        "levels": [int(v) for v in levels],
                        "predicted_speedup": round(predicted, 4),
                        "measured_speedup": round(measured, 4),
                        "ratio": round(measured / target, 4),
                        "measured_over_predicted": round(measured / predicted, 4),
                    }
                )
            )
            if kind == "dp":
                dp_ratios.append(measured / target)
            over_pred.append(measured / predicted)
        for target in args.targets:
            ratios = [
                m / t
                for (t, k, *_), m in zip(plans, speedups, strict=True)
                if k == "dp" and t == target
            ]
            print(
                json.dumps(
                    {
                        "model": name,
                        "target": target,
                        "dp_profiles": len(ratios),
                        "min_dp_ratio": round(min(ratios), 4),
                        "mean_dp_ratio": round(float(np.mean(ratios)), 4),
                    }
                )
            )
        print(
            json.dumps(
                {
                    "model": name,
                    "summary": True,
                    "profile_s": round(profile_s, 1),
                    "dp_profiles": len(dp_ratios),
                    "min_dp_ratio": round(min(dp_ratios), 4),
                    "mean_dp_ratio": round(float(np.mean(dp_ratios)), 4),
                    "below_095": int(sum(r < 0.95 for r in dp_ratios)),
                    "mean_measured_over_predicted": round(float(np.mean(over_pred)), 4),
                }
            )
        )


if __name__ == "__main__":
    main()
