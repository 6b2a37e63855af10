"""Wall time of the default sparse double descent sweep: all levels, one method, one mode, one seed.

    uv run python bench/sdd_sweep.py [--method magnitude] [--mode rewind] [--seed 0]
        [--threads 1] [--set sdd.final_sparsity=0.99 ...] [--workdir DIR] [--keep]

Runs prepare, the dense training, every level of one chain and the gather step through the
steps' own code (no Prefect), in a fresh folder (so nothing is a cache hit), with the sdd
defaults from pruneflow.sdd.params. Prints one JSON line: the wall time of the whole sweep and
of its parts, the number of levels, the host load before and after, and the curve's summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pruneflow.sdd.params import with_sdd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="magnitude")
    parser.add_argument("--mode", default="rewind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="sdd.KEY=VALUE (YAML value), repeatable",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    sdd: dict = {"methods": [args.method], "modes": [args.mode], "seeds": [args.seed]}
    for text in args.overrides:
        key, _, raw = text.partition("=")
        if not key.startswith("sdd."):
            sys.exit(f"--set takes sdd.KEY=VALUE, got {text!r}")
        node = sdd
        *parents, leaf = key.removeprefix("sdd.").split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    params = with_sdd(**sdd)
    params = params.model_copy(
        update={
            "runtime": params.runtime.model_copy(
                update={"threads": args.threads, "progress": "off"}
            )
        }
    )

    work = args.workdir or Path(tempfile.mkdtemp(prefix="sdd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ["PRUNEFLOW_STATE_DIR"] = str(work / ".pruneflow")
    from pruneflow.steps.sdd import run_sweep  # after the state dir is set

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    records = run_sweep(params, plots=False, force=True)
    wall = time.perf_counter() - started
    parts: dict[str, float] = {}
    for r in records:
        parts[r["step"]] = parts.get(r["step"], 0.0) + r["seconds"]
    sweep = next(r for r in records if r["step"] == "sdd_sweep")["summary"]
    curve = next(iter(sweep["curves"].values()))
    print(
        json.dumps(
            {
                "bench": "sdd_sweep",
                "method": args.method,
                "mode": args.mode,
                "seed": args.seed,
                "threads": args.threads,
                "levels": sweep["levels"],
                "final_sparsity": round(sweep["final_sparsity"], 6),
                "wall_s": round(wall, 2),
                "step_s": {k: round(v, 2) for k, v in parts.items()},
                "s_per_level": round(parts.get("sdd_level", 0.0) / max(sweep["levels"], 1), 2),
                "loadavg_before": round(load_before, 2),
                "loadavg_after": round(os.getloadavg()[0], 2),
                "dense_test_acc": round(sweep["dense_test_acc"], 4),
                "min_test_acc": round(curve["min_test_acc"], 4),
                "best_test_acc": round(curve["best_test_acc"], 4),
                "best_sparsity": round(curve["best_sparsity"], 6),
                "double_descent": curve["double_descent"],
            }
        )
    )
    if args.keep or args.workdir is not None:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
