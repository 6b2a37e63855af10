"""Does the DP's choice keep its promise? Measured speedup of DP-chosen profiles vs target.

    uv run python bench/spdy_speedup.py [--params params.yaml] [--set key=value ...]
        [--models smallcnn] [--targets 1.5 2 2.5 3] [--candidates 8] [--tables DIR]
        [--repeats N] [--passes N] [--seed 0]

Random profiles (``bench/timing_additivity.py``) check that the timing table adds up on
average. SPDY's guarantee is about something harder: the profiles the DP *chooses*. The DP
picks, per layer, the levels that look cheapest for their error, so a level that happened to be
timed in a quiet moment (a dip in the table) is picked more often than its neighbours, and the
chosen profiles run slower than predicted (a winner's curse). This bench measures exactly that,
without the training around it:

For each model: profile it as the pipeline's ``profile`` step would (``spdy.grid`` and
``spdy.timing`` of ``--params`` with the ``--set`` overrides, the first training images of
``spdy.dataset``), or read ``DIR/<model>.parquet`` when it holds one for this host and these
layers (a fresh profile is written there). For each target: the DP over the
table with ``--candidates`` random sensitivity vectors ``c ~ U[0, 1]^L`` (the search's random
phase, error prior ``c_l (i / (|S| - 1))^2``) plus the uniform profile; for each distinct
profile, exact random masks on the model, ``SparseRuntime.from_table``, and the dense and the
pruned runtime timed alternately, all profiles in several passes (``measure_speedups``), as
``spdy_results`` does.

Models and targets default to ``spdy.models`` and ``spdy.targets``; the measurement's repeats,
passes and block length to ``spdy.gmp``'s. E.g. resnet18_cifar on the folder that
``bench/cifar_digits.py /tmp/cifar`` writes: ``--set spdy.dataset=cifar10 --set
data.root=/tmp/cifar --models resnet18_cifar``.

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

from pruneflow import config
from pruneflow.models import build
from pruneflow.models.zoo import prunable_layers
from pruneflow.runtime import configure
from pruneflow.spdy.baselines import uniform_profile
from pruneflow.spdy.dp import DPSolver, discretize
from pruneflow.spdy.search import errors_from_c
from pruneflow.steps import timing as timing_step
from pruneflow.steps.data import build_labels, load_data
from pruneflow.steps.spdy_inputs import measured_speedups
from pruneflow.timing import (
    SparseRuntime,
    default_batch_size,
    exact_mask,
    host_description,
    profile_model,
    read_timing_table,
    time_matrix,
    write_timing_table,
)


def _table(name, model, x, settings, args):  # noqa: ANN001, ANN202
    path = Path(args.tables) / f"{name}.parquet" if args.tables else None
    if path is not None and path.is_file():
        return read_timing_table(
            path, name, prunable_layers(model), host=host_description(settings.threads)
        )
    table, meta = profile_model(model, name, calib=x, settings=settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--models", nargs="+", default=None, help="default: spdy.models")
    parser.add_argument("--targets", nargs="+", type=float, default=None)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--tables", default=None, help="folder to read/write timing tables")
    parser.add_argument("--repeats", type=int, default=None, help="spdy.gmp.measure_repeats")
    parser.add_argument("--passes", type=int, default=None, help="spdy.gmp.measure_passes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models = [f"spdy.models=[{','.join(args.models)}]"] if args.models else []
    measure = [
        f"spdy.gmp.measure_{k}={v}"
        for k, v in (("repeats", args.repeats), ("passes", args.passes))
        if v is not None
    ]
    params = config.load(args.params, [*args.overrides, *models, *measure])
    spdy = params.spdy
    configure(spdy.timing.threads, True)
    print(json.dumps({"host": host_description(spdy.timing.threads), "loadavg": os.getloadavg()}))
    for name in spdy.models:
        p = config.scoped(params, f"spdy:{name}")
        data = load_data(p)
        settings = timing_step.settings(p)
        torch.manual_seed(args.seed)
        model = build(name, data.num_classes, data.in_shape).eval()
        frame = build_labels(p, data)
        train = np.flatnonzero(frame["split"].to_numpy() == "train")
        x = data.images(train[: settings.batch_size or default_batch_size(name)])
        t0 = time.perf_counter()
        table, meta = _table(name, model, x, settings, args)
        profile_s = time.perf_counter() - t0
        layers, grid = list(meta["layers"]), list(meta["levels"])
        times = time_matrix(table, layers)
        dense = SparseRuntime(model, "dense")
        rng = np.random.default_rng([args.seed, 11])
        plans = []  # (target, kind, levels, predicted, runtime)
        for target in args.targets or spdy.targets:
            disc, profiles = _profiles(times, meta, target, args, rng)
            for kind, levels in profiles:
                masks = {
                    n: exact_mask(model.get_submodule(n).weight.shape, grid[lv], rng)
                    for n, lv in zip(layers, levels, strict=True)
                }
                pruned = SparseRuntime.from_table(model, table, masks=masks)
                plans.append((target, kind, levels, disc.predicted_speedup(levels), pruned))
        runtimes = [plan[-1] for plan in plans]
        speedups = measured_speedups(p, meta, dense, runtimes, x)
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
        for target in args.targets or spdy.targets:
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
