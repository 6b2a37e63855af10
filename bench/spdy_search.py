"""How close SPDY's search gets to its floor: one calibration forward pass per distinct profile.

    uv run python bench/spdy_search.py [--model smallcnn] [--target 2.0] [--params params.yaml]

Needs the SPDY artifacts of ``--model`` in the current folder (``pruneflow run spdy``, or the
stages prepare/train_dense/profile/recondb_layer/recondb). Runs the search for ``--target``
from scratch (no checkpoint, no step cache) with the params' search settings, and times:

- ``search_s``: the whole search (DP calls, memo, stitching, scoring);
- ``forward_s``: one calibration forward pass of the dense model over the calibration batches,
  median of 5 (what scoring one profile must cost at least);
- ``ratio = search_s / (profiles_scored * forward_s)``; goal <= 1.2 on the default CNN.

Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from pruneflow import config
from pruneflow.runtime import configure
from pruneflow.spdy.scoring import CalibrationLoss
from pruneflow.steps.spdy import Problem, run_search
from pruneflow.steps.spdy_inputs import calibration_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smallcnn")
    parser.add_argument("--target", type=float, default=2.0)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    p = config.scoped(config.load(args.params, []), f"spdy:{args.model}")
    configure(p.runtime.threads, p.runtime.flush_denormal)
    problem = Problem(p)
    disc = problem.discretize(p, args.target)
    batches = calibration_batches(p)
    score = CalibrationLoss(problem.model, problem.db, problem.layers, batches, bn=p.spdy.search.bn)

    forward = []
    with torch.no_grad():
        for _ in range(5):
            t0 = time.perf_counter()
            for x, _y in batches:
                problem.model(x)
            forward.append(time.perf_counter() - t0)
    forward_s = statistics.median(forward)

    t0 = time.perf_counter()
    result = run_search(p, disc, score)
    search_s = time.perf_counter() - t0
    base = {"model": args.model, "target": args.target, "threads": torch.get_num_threads()}
    figures = {
        "search_s": round(search_s, 3),
        "forward_s": round(forward_s, 4),
        "candidates": result.evaluations,
        "profiles_scored": result.distinct_profiles,
        "layer_copies": score.swapped_layers,
        "ratio": round(search_s / (result.distinct_profiles * forward_s), 3),
    }
    for name, value in figures.items():
        print(json.dumps({**base, "figure": name, "value": value}), flush=True)


if __name__ == "__main__":
    main()
