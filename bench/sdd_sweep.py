"""Wall time of the sparse double descent sweep: one chain in-process, and chains fanned out on
the flow's task runner with 1 or more workers.

    uv run python bench/sdd_sweep.py [--method magnitude] [--mode finetune] [--seed 0]
        [--threads 1] [--set sdd.final_sparsity=0.99 ...] [--workdir DIR] [--keep]
    uv run python bench/sdd_sweep.py --workers 1 2 [--runner thread|process]
        [--mode finetune rewind] [--threads 1] [--set ...]

Without ``--workers``: prepare, the dense training, every level of the chain(s) and the gather
step through the steps' own code (no Prefect), in a fresh folder (so nothing is a cache hit),
with the sdd defaults of pruneflow.config (params.yaml's). One JSON line
(``"bench": "sdd_sweep"``): the wall time of the whole sweep and of its parts, the number of
levels, the seconds each retraining mode's levels took (``mode_s``: what each mode costs; reinit
levels need the rewind chain's, so ``--mode rewind reinit`` runs both), the host load before
and after, and the curve's summary.

With ``--workers N ...``: the ``double_descent`` Prefect flow (prepare, dense, every chain's
levels, gather, plots) with ``ThreadPoolTaskRunner(max_workers=N)``, on one Prefect server the
bench starts for itself, each N in a fresh process and folder (so neither the step cache nor
Prefect's result cache hits). The default modes give two chains (finetune, rewind) of the same
method and seed: with 1 worker they run one after the other, with 2 side by side (levels in
order within each chain; reinit levels run in the rewind chain, after the rewind level whose
masks they take). One JSON line per N (``"bench": "sdd_sweep_flow"``), then one with
the speedup of each N over the first (``"bench": "sdd_sweep_flow_speedup"``), and one with the
server's start time. ``--threads`` is torch's intra-op threads in every worker.
``--runner process`` swaps the flow's ThreadPoolTaskRunner for Prefect's ProcessPoolTaskRunner
(workers do not share one GIL; each worker process pays its own imports).
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

import yaml

from pruneflow import config
from pruneflow.config import Params

REPO = Path(__file__).resolve().parent.parent


def _params(args: argparse.Namespace, modes: list[str]) -> Params:
    sdd: dict = {"methods": [args.method], "modes": modes, "seeds": [args.seed]}
    for text in args.overrides:
        key, _, raw = text.partition("=")
        if not key.startswith("sdd."):
            sys.exit(f"--set takes sdd.KEY=VALUE, got {text!r}")
        node = sdd
        *parents, leaf = key.removeprefix("sdd.").split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    params = config.updated(sdd=sdd)
    runtime = params.runtime.model_copy(update={"threads": args.threads, "progress": "off"})
    return params.model_copy(update={"runtime": runtime})


def _step_seconds(records: list[dict[str, Any]]) -> dict[str, float]:
    parts: dict[str, float] = {}
    for r in records:
        parts[r["step"]] = parts.get(r["step"], 0.0) + r["seconds"]
    return {k: round(v, 2) for k, v in parts.items()}


def _mode_seconds(records: list[dict[str, Any]]) -> dict[str, float]:
    parts: dict[str, float] = {}
    for r in records:
        if r["step"] == "sdd_level":
            mode = r["item"]["mode"]
            parts[mode] = parts.get(mode, 0.0) + r["seconds"]
    return {k: round(v, 2) for k, v in parts.items()}


def _curve_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    sweep = next(r for r in records if r["step"] == "sdd_sweep")["summary"]
    curves = {
        name: {
            "best_test_acc": round(c["best_test_acc"], 4),
            "best_sparsity": round(c["best_sparsity"], 6),
            "min_test_acc": round(c["min_test_acc"], 4),
            "double_descent": c["double_descent"],
        }
        for name, c in sweep["curves"].items()
    }
    return {
        "levels": sweep["levels"],
        "final_sparsity": round(sweep["final_sparsity"], 6),
        "dense_test_acc": round(sweep["dense_test_acc"], 4),
        "curves": curves,
    }


def in_process(args: argparse.Namespace) -> None:
    """One JSON line: the sweep through the steps, in this process, no Prefect."""
    modes = args.mode or ["finetune"]
    params = _params(args, modes)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sdd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ["PRUNEFLOW_STATE_DIR"] = str(work / ".pruneflow")
    from pruneflow.steps.sdd import run_sweep  # after the state dir is set

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    records = run_sweep(params, plots=False, force=True)
    wall = time.perf_counter() - started
    parts = _step_seconds(records)
    summary = _curve_summary(records)
    chains = len(modes)
    print(
        json.dumps(
            {
                "bench": "sdd_sweep",
                "method": args.method,
                "modes": modes,
                "seed": args.seed,
                "chains": chains,
                "threads": args.threads,
                "wall_s": round(wall, 2),
                "step_s": parts,
                "s_per_level": round(
                    parts.get("sdd_level", 0.0) / max(summary["levels"] * chains, 1), 2
                ),
                "mode_s": _mode_seconds(records),
                "loadavg_before": round(load_before, 2),
                "loadavg_after": round(os.getloadavg()[0], 2),
                **summary,
            }
        ),
        flush=True,
    )
    if args.keep or args.workdir is not None:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


def _import_path(repo: str) -> None:
    """Process-pool workers: make flows/ and tasks/ importable."""
    if repo not in sys.path:
        sys.path.insert(0, repo)


def flow_child(spec_file: Path) -> None:
    """Run the flow once (in a fresh folder, the bench's server) and print its figures as JSON."""
    spec = json.loads(spec_file.read_text())
    from pruneflow.prefect_env import configure_environment
    from pruneflow.steps.base import state_dir

    configure_environment(state_dir())
    sys.path.insert(0, str(REPO))  # flows/ and tasks/ are repository folders
    from prefect._internal.concurrency.services import QueueService
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    from flows.double_descent import double_descent

    if spec["runner"] == "process":
        runner = ProcessPoolTaskRunner(
            max_workers=spec["workers"], initializer=_import_path, initargs=(str(REPO),)
        )
    else:
        runner = ThreadPoolTaskRunner(max_workers=spec["workers"])
    flow = double_descent.with_options(task_runner=runner)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    records = flow(spec["params"])
    wall = time.perf_counter() - started
    computed = {r["status"] for r in records if r["step"] == "sdd_level"}
    if computed != {"computed"}:
        raise SystemExit(f"levels were not all computed fresh: {sorted(computed)}")
    print(
        json.dumps(
            {
                "wall_s": round(wall, 2),
                "step_s": _step_seconds(records),
                "loadavg_before": round(load_before, 2),
                "loadavg_after": round(os.getloadavg()[0], 2),
                **_curve_summary(records),
            }
        ),
        flush=True,
    )
    QueueService.drain_all(timeout=10)  # Prefect's log/event senders, before the exit


def with_workers(args: argparse.Namespace) -> None:
    """One JSON line per worker count, then the speedups and the server's start time."""
    from pruneflow.prefect_env import start_server

    modes = args.mode or ["finetune", "rewind"]
    params = _params(args, modes).model_dump(mode="json")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="sdd-bench-flow-"))
    root.mkdir(parents=True, exist_ok=True)
    server_state = root / "server"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(server_state / "prefect")
    os.environ.update(env)
    started = time.perf_counter()
    server = start_server(server_state)
    server_s = time.perf_counter() - started
    walls: dict[int, float] = {}
    try:
        for workers in args.workers:
            work = root / f"workers{workers}"
            work.mkdir()
            spec = work / "spec.json"
            spec.write_text(
                json.dumps({"workers": workers, "runner": args.runner, "params": params})
            )
            child_env = {
                **env,
                "PREFECT_API_URL": server["url"],
                "PRUNEFLOW_STATE_DIR": str(work / ".pruneflow"),
                "PREFECT_HOME": str(work / ".pruneflow" / "prefect"),
            }
            t0 = time.perf_counter()
            result = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", str(spec)],
                cwd=work,
                env=child_env,
                capture_output=True,
                text=True,
            )
            process_s = time.perf_counter() - t0
            if result.returncode != 0:
                raise SystemExit(f"workers={workers} failed:\n{result.stderr[-3000:]}")
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            walls[workers] = figures["wall_s"]
            print(
                json.dumps(
                    {
                        "bench": "sdd_sweep_flow",
                        "runner": args.runner,
                        "workers": workers,
                        "method": args.method,
                        "modes": modes,
                        "seed": args.seed,
                        "chains": len(modes),
                        "threads": args.threads,
                        "process_s": round(process_s, 2),
                        **figures,
                    }
                ),
                flush=True,
            )
        base = args.workers[0]
        print(
            json.dumps(
                {
                    "bench": "sdd_sweep_flow_speedup",
                    "runner": args.runner,
                    "baseline_workers": base,
                    "speedup": {str(w): round(walls[base] / walls[w], 3) for w in walls},
                    "chains": len(modes),
                    "threads": args.threads,
                }
            ),
            flush=True,
        )
        print(json.dumps({"bench": "sdd_sweep_prefect_server", "start_s": round(server_s, 2)}))
    finally:
        os.killpg(server["pid"], 15)
        if not (args.keep or args.workdir is not None):
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="magnitude")
    parser.add_argument(
        "--mode",
        nargs="+",
        default=None,
        help="retrain modes (default: finetune; with --workers: finetune rewind)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=None,
        help="run the Prefect flow with these task-runner worker counts, one process each",
    )
    parser.add_argument(
        "--runner",
        choices=("thread", "process"),
        default="thread",
        help="with --workers: Prefect's ThreadPoolTaskRunner (the flow's own) or ProcessPool",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="sdd.KEY=VALUE (YAML value), repeatable",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        flow_child(args.child)
    elif args.workers:
        if any(w < 1 for w in args.workers):
            sys.exit("--workers takes counts >= 1")
        with_workers(args)
    else:
        in_process(args)


if __name__ == "__main__":
    main()
