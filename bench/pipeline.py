"""Wall time of the full default pipeline: cold, warm (all cached), per step, and what
orchestration costs per step.

In a temporary copy of the repository (so DVC can run there too):

  cold      `pruneflow run` from nothing (the local Prefect server started once, not counted)
  step      per (step, model): runs and compute seconds, from .pruneflow/runs/last.json
  claim     every claim's verdict and what it measured (metrics/claims.json)
  warm      `pruneflow run` again, nothing changed: the run is replayed without loading the
            pipeline (pruneflow.run_shortcut), process start and imports included; its wall
            and CPU seconds, and the load on the host
  warm_full `pruneflow run` once more with the shortcut's record removed: every fingerprint
            computed, every step found in the step cache (none scheduled in Prefect); what a
            run costs where one step changed, less that step; wall / step runs per step
  dvc       `dvc repro` after the flow, sharing its step cache: every stage finds its outputs
            (DVC deletes a stage's outputs before running it; the step cache restores them),
            so its wall / stages is DVC's cost per stage; `recomputed` must be 0

One JSON line per figure: {"bench": "pipeline", "figure": ..., ...}. Options: --params FILE
(default: the repository's params.yaml; ``presets/smoke.yaml`` for a cold run of minutes),
repeatable --set key=value, --warm-repeats N (warm figures are medians of N runs), --no-dvc,
--keep (leave the copy in place, its path printed, e.g. to take its metrics/).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from pruneflow import config

REPO = Path(__file__).resolve().parent.parent
EXE = shutil.which("pruneflow") or str(Path(sys.executable).with_name("pruneflow"))
DVC = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))


def emit(figure: str, **values) -> None:
    print(json.dumps({"bench": "pipeline", "figure": figure, **values}), flush=True)


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    return timed_cpu(cmd, cwd, env)[0]


def timed_cpu(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def warm_runs(
    cmd: list[str], work: Path, env: dict[str, str], repeats: int, full: bool
) -> dict[str, float | bool]:
    """Medians over ``repeats`` all-cached runs; ``full``: without the shortcut's record."""
    walls, cpus, cached = [], [], True
    for _ in range(repeats):
        if full:
            for record in (work / ".pruneflow" / "runs").glob("shortcut-*.json"):
                record.unlink()
        wall, cpu = timed_cpu(cmd, work, env)
        walls.append(wall)
        cpus.append(cpu)
        cached &= {r["status"] for r in last_run(work)["records"]} == {"cached"}
    return {
        "seconds": round(statistics.median(walls), 2),
        "cpu_seconds": round(statistics.median(cpus), 2),
        "all_cached": cached,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def copy_repository(dest: Path) -> None:
    """The working tree as git sees it (tracked and new unignored files), without artifacts."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    pack = subprocess.run(
        ["tar", "--null", "--ignore-failed-read", "-T", "-", "-cf", "-"],
        cwd=REPO,
        input=listing,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-xf", "-"], cwd=dest, input=pack, check=True)


def last_run(work: Path) -> dict:
    return json.loads((work / ".pruneflow" / "runs" / "last.json").read_text())


def cache_entries(work: Path) -> int:
    return len(list((work / ".pruneflow" / "stepcache").glob("*/record.json")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--warm-repeats", type=int, default=3)
    parser.add_argument("--no-dvc", action="store_true")
    parser.add_argument(
        "--keep", action="store_true", help="leave the copy in place and print its path"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pf-pipeline-"))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PRUNEFLOW_STATE_DIR=str(work / ".pruneflow"), PREFECT_HOME=str(work / ".prefect"))
    # DVC stages call `pruneflow`: this environment's, also when run without `uv run`
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    try:
        copy_repository(work)
        # overrides go into the copy's params.yaml, so DVC reads the same values as the flow
        params = config.load(args.params, args.overrides).model_dump(mode="json")
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        emit("server_start", seconds=round(timed([EXE, "server", "start"], work, env), 1))

        cold = timed([EXE, "run"], work, env)
        log = last_run(work)
        compute = sum(r["seconds"] for r in log["records"])
        tasks = len(log["records"])
        emit("cold", seconds=round(cold, 1), step_runs=tasks, compute_seconds=round(compute, 1))
        for row in log["steps"]:
            emit(
                "step",
                step=row["step"],
                model=row["model"],
                runs=row["runs"],
                seconds=round(row["seconds"], 1),
            )

        # what the default produced: SPDY's gradual-pruning table (is the guarantee met?)
        for table in sorted(work.glob("artifacts/spdy/*/results.parquet")):
            for row in pd.read_parquet(table).itertuples():
                emit(
                    "spdy_result",
                    model=row.model,
                    target=row.target,
                    profile=row.profile,
                    acc=round(row.acc, 4),
                    dense_acc=round(row.dense_acc, 4),
                    measured_speedup=round(row.measured_speedup, 3),
                    measured_over_target=round(row.measured_speedup / row.target, 3),
                )

        # and the verdicts of the claims table, read here: without --keep the copy is removed
        claims = work / "metrics" / "claims.json"
        if claims.is_file():
            for key, claim in json.loads(claims.read_text()).items():
                emit("claim", key=key, verdict=claim["verdict"], measured=claim["measured"])

        # every step a cache hit: the wall time is orchestration alone (process start and
        # imports, the check that nothing changed, the summary)
        run = [EXE, "run"]
        emit("warm", step_runs=tasks, **warm_runs(run, work, env, args.warm_repeats, full=False))
        full = warm_runs(run, work, env, args.warm_repeats, full=True)
        per_step = round(float(full["seconds"]) / tasks, 3)
        emit("warm_full", step_runs=tasks, per_step_seconds=per_step, **full)

        if not args.no_dvc:
            # the copy carries the repository's .dvc/ already: a git repo is all DVC needs
            subprocess.run(["git", "init", "-q"], cwd=work, env=env, check=True)
            before = cache_entries(work)
            dvc = timed([DVC, "repro"], work, env)
            n_stages = len(yaml.safe_load((work / "dvc.lock").read_text())["stages"])
            emit(
                "dvc_repro_after_flow",
                seconds=round(dvc, 1),
                stages=n_stages,
                per_stage_seconds=round(dvc / max(n_stages, 1), 2),
                recomputed=cache_entries(work) - before,
            )
    finally:
        subprocess.run([EXE, "server", "stop"], cwd=work, env=env, capture_output=True)
        if args.keep:
            emit("kept", path=str(work))
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
