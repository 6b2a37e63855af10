"""Wall time of the fan-out steps on the thread runner vs a Dask LocalCluster.

    uv run python bench/fanout.py [--runners thread dask] [--dask-workers 2]
        [--workloads sdd recondb] [--set KEY=VALUE ...] [--workdir DIR] [--keep]

Two workloads, with the defaults of params.yaml (``--set`` overrides them, e.g.
``--set sdd.final_sparsity=0.9`` for a shorter sweep):

- ``sdd``: the default sparse double descent sweep set, i.e. the ``double_descent`` flow (every
  chain of levels of every method x mode x seed, then the gather and plots steps);
- ``recondb``: the per-layer reconstruction database build of every SPDY model (one task per
  layer, then the index).

Each (workload, runner) runs in its own process and folder, so neither the step cache nor
Prefect's result cache hits; the inputs (data, dense models) are made first without Prefect and
are not timed. The Dask figure includes starting the LocalCluster (its worker processes import
torch and Prefect) and closing it. One JSON line per figure (``"bench": "fanout"``), then one
line per workload with the speedup of each runner over the thread runner
(``"bench": "fanout_speedup"``). The host load is printed beside each figure: on a shared
2-core machine the figures are only as quiet as the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # flows/ and tasks/ are repository folders


def _params(overrides: list[str], runner: str, dask_workers: int):
    from pruneflow import config

    sets = [*overrides, f"orchestration.runner={runner}"]
    sets += [f"orchestration.dask.workers={dask_workers}", "runtime.progress=off"]
    return config.load(REPO / "params.yaml", sets)


def _prepare_inputs(workload: str, params) -> None:
    """Data and dense models, through the steps alone (no Prefect), before the clock starts."""
    from pruneflow import config
    from pruneflow.steps import STEPS

    if workload == "sdd":
        for model in params.sdd.models:
            scoped = config.scoped(params, f"sdd:{model}")
            STEPS["prepare"].run(scoped)
            STEPS["sdd_dense"].run_all(scoped)
    else:
        for model in params.spdy.models:
            scoped = config.scoped(params, f"spdy:{model}")
            STEPS["prepare"].run(scoped)
            STEPS["train_dense"].run(scoped)


def _recondb_flow():
    from prefect import flow

    from pruneflow import config
    from pruneflow.steps.recondb import layer_items
    from tasks.common import map_items, run_task
    from tasks.steps import TASKS

    @flow(name="bench-recondb", description="the per-layer reconstruction database build")
    def recondb_build(params: dict[str, Any]) -> list[dict[str, Any]]:
        records = []
        for model in params["spdy"]["models"]:
            scope = f"spdy:{model}"
            scoped = config.scoped(config.from_dict(params), scope)
            layers = map_items(TASKS["recondb_layer"], params, layer_items(scoped), [], scope)
            records += [*layers, run_task(TASKS["recondb"], params, layers, scope=scope)]
        return records

    return recondb_build


def child(spec_file: Path) -> None:
    """One (workload, runner) in this process's folder; prints its figures as JSON."""
    spec = json.loads(spec_file.read_text())
    params = _params(spec["overrides"], spec["runner"], spec["dask_workers"])
    _prepare_inputs(spec["workload"], params)
    from prefect._internal.concurrency.services import QueueService

    from tasks.runner import with_runner

    if spec["workload"] == "sdd":
        from flows.double_descent import double_descent as chosen
    else:
        chosen = _recondb_flow()
    flow = with_runner(chosen, params)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    records = flow(params.model_dump(mode="json"))
    wall = time.perf_counter() - started
    step = {"sdd": "sdd_level", "recondb": "recondb_layer"}[spec["workload"]]
    fanned = [r for r in records if r["step"] == step]
    statuses = sorted({r["status"] for r in fanned})
    if statuses != ["computed"]:
        raise SystemExit(f"fan-out items were not all computed fresh: {statuses}")
    print(
        json.dumps(
            {
                "wall_s": round(wall, 2),
                "items": len(fanned),
                "item_s_sum": round(sum(r["seconds"] for r in fanned), 2),
                "loadavg_before": round(load_before, 2),
                "loadavg_after": round(os.getloadavg()[0], 2),
            }
        ),
        flush=True,
    )
    QueueService.drain_all(timeout=10)  # Prefect's log/event senders, before the exit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runners", nargs="+", choices=("thread", "dask"), default=None)
    parser.add_argument("--dask-workers", type=int, default=2)
    parser.add_argument("--workloads", nargs="+", choices=("sdd", "recondb"), default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    runners = args.runners or ["thread", "dask"]
    workloads = args.workloads or ["sdd", "recondb"]
    _params(args.overrides, "thread", args.dask_workers)  # bad --set: fail before any work

    from pruneflow.prefect_env import start_server

    root = args.workdir or Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(root / "server" / "prefect")
    os.environ.update(env)
    server = start_server(root / "server")
    try:
        for workload in workloads:
            walls: dict[str, float] = {}
            for runner in runners:
                work = root / f"{workload}-{runner}"
                work.mkdir()
                spec = work / "spec.json"
                spec.write_text(
                    json.dumps(
                        {
                            "workload": workload,
                            "runner": runner,
                            "dask_workers": args.dask_workers,
                            "overrides": args.overrides,
                        }
                    )
                )
                child_env = {
                    **env,
                    "PREFECT_API_URL": server["url"],
                    "PRUNEFLOW_STATE_DIR": str(work / ".pruneflow"),
                }
                result = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--child", str(spec)],
                    cwd=work,
                    env=child_env,
                    capture_output=True,
                    text=True,
                )
                if result.returncode != 0:
                    raise SystemExit(f"{workload} on {runner} failed:\n{result.stderr[-3000:]}")
                figures = json.loads(result.stdout.strip().splitlines()[-1])
                walls[runner] = figures["wall_s"]
                workers = args.dask_workers if runner == "dask" else None
                print(
                    json.dumps(
                        {
                            "bench": "fanout",
                            "workload": workload,
                            "runner": runner,
                            "dask_workers": workers,
                            "overrides": args.overrides,
                            **figures,
                        }
                    ),
                    flush=True,
                )
            if "thread" in walls:
                speedup = {r: round(walls["thread"] / w, 3) for r, w in walls.items()}
                print(
                    json.dumps(
                        {"bench": "fanout_speedup", "workload": workload, "over_thread": speedup}
                    ),
                    flush=True,
                )
    finally:
        os.killpg(server["pid"], 15)
        if args.keep or args.workdir is not None:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
