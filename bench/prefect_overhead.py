"""What orchestration costs per run: Prefect (temporary vs reused server) and plain steps.

Runs the foundation pipeline (digits, 3 epochs) once to fill the caches in a temporary folder,
then times, as a user would see them, commands whose steps are all cached, so the wall time is
almost entirely overhead:

  stage      `pruneflow stage prepare` + `pruneflow stage train_dense` (what DVC stages run)
  ephemeral  `pruneflow run` with orchestration.server=ephemeral (a temporary server per run)
  local      `pruneflow run` against the reused local server (orchestration.server=local)
  start      starting the local server once (first `pruneflow server start`)

One JSON line per figure: {"bench": "prefect_overhead", "mode": ..., "median_s", "min_s", ...}.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXE = shutil.which("pruneflow") or str(Path(sys.executable).with_name("pruneflow"))
FAST = ["--set", "train.epochs=3"]


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run([EXE, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{args} failed: {result.stderr[-2000:]}")
    return time.perf_counter() - started


def line(mode: str, samples: list[float], **extra) -> None:
    print(
        json.dumps(
            {
                "bench": "prefect_overhead",
                "mode": mode,
                "median_s": round(statistics.median(samples), 2),
                "min_s": round(min(samples), 2),
                "max_s": round(max(samples), 2),
                "runs": len(samples),
                **extra,
            }
        ),
        flush=True,
    )


def main(repeats: int = 3) -> None:
    work = Path(tempfile.mkdtemp(prefix="pf-overhead-"))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PRUNEFLOW_STATE_DIR"] = str(work / ".pruneflow")
    env["PREFECT_HOME"] = str(work / ".pruneflow" / "prefect")
    try:
        line("start", [timed(["server", "start"], work, env)])
        timed(["run", "dense", *FAST], work, env)  # fill the caches
        stage = [
            timed(["stage", "prepare", *FAST], work, env)
            + timed(["stage", "train_dense", *FAST], work, env)
            for _ in range(repeats)
        ]
        line("stage", stage, note="two processes, no Prefect")
        local = [timed(["run", "dense", *FAST], work, env) for _ in range(repeats)]
        line("local", local, note="reused local server, all steps cached")
        eph = [
            timed(["run", "dense", *FAST, "--set", "orchestration.server=ephemeral"], work, env)
            for _ in range(repeats)
        ]
        line("ephemeral", eph, note="temporary server per run, all steps cached")
        line("saved_per_run", [statistics.median(eph) - statistics.median(local)])
    finally:
        subprocess.run([EXE, "server", "stop"], cwd=work, env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
