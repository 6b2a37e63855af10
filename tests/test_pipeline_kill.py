"""The whole pipeline killed with SIGKILL in the middle of a fan-out resumes where it stopped.

``pruneflow run`` (every method, then the report) runs in a subprocess on tiny settings. It is
killed while SPDY's gradual-pruning runs are under way, after the first has finished. A second
``pruneflow run`` must finish, recompute only the steps that had not finished (asserted on the
step cache's records and the run log's statuses, not on log text) and leave no half-written
artifact.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import pruneflow_exe
from safetensors import safe_open
from tiny_params import CHEX, SDD, SPDY

TINY = {
    "runtime": {"threads": 1, "progress": "off"},
    "spdy": {
        **SPDY,
        "grid": {**SPDY["grid"], "steps": 8},
        "targets": [1.25],  # the fastest profile of this tiny net measured 1.6-2.2x
        "search": {"candidates": 8, "max_no_improvement": 4},
        # the long step the test kills: three runs of 4 epochs each
        "gmp": {**SPDY["gmp"], "end_epoch": 2, "finetune_epochs": 2},
    },
    "sdd": {**SDD, "final_sparsity": 0.8},
    "chex": {**CHEX, "compare": {**CHEX["compare"], "methods": ["chex"]}},
}


def _cache_entries(state: Path) -> set[str]:
    """Fingerprints of the step runs that finished (each stores a record when it does)."""
    return {
        json.loads(p.read_text())["fingerprint"]
        for p in (state / "stepcache").glob("*/record.json")
    }


def _check_whole(root: Path) -> int:
    """Every artifact under a final name reads completely; returns how many were checked."""
    checked = 0
    for path in root.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                for key in f.keys():
                    f.get_tensor(key)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            continue
        checked += 1
    return checked


def test_pipeline_killed_mid_fan_out_resumes_without_recomputing(prefect_api, workdir):
    Path("params.yaml").write_text(yaml.safe_dump(TINY))
    state = workdir / ".pruneflow"
    env = {**os.environ, "PRUNEFLOW_STATE_DIR": str(state)}
    log = open(workdir / "first.log", "w+")  # noqa: SIM115 (read back while it grows)
    first = subprocess.Popen(
        [pruneflow_exe(), "run"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            text = Path(log.name).read_text()
            if "+ spdy_gmp[" in text:  # one gradual-pruning run done, the others under way
                break
            assert first.poll() is None, f"the pipeline ended before the kill:\n{text[-2000:]}"
            time.sleep(0.05)
        else:
            pytest.fail("the gradual-pruning fan-out never started")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    finished = _cache_entries(state)
    assert finished, "nothing had finished before the kill"
    assert _check_whole(workdir / "artifacts") > 0

    second = subprocess.run(
        [pruneflow_exe(), "run"], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    run = json.loads((state / "runs" / "last.json").read_text())
    by_status: dict[str, list[dict]] = {}
    for r in run["records"]:
        by_status.setdefault(r["status"], []).append(r)
    computed = {r["fingerprint"] for r in by_status.get("computed", [])}
    # what had finished is never computed again; only the unfinished steps ran
    assert not computed & finished
    reused = {r["fingerprint"] for r in run["records"] if r["status"] in ("cached", "restored")}
    assert finished <= reused | computed and finished & reused == finished - computed
    gmp = [r for r in run["records"] if r["step"] == "spdy_gmp"]
    assert len(gmp) == 3
    assert 1 <= sum(r["status"] != "computed" for r in gmp) < 3  # killed mid fan-out
    # the methods after SPDY and the report ran only in the second run
    assert {"sdd_sweep", "chex_report", "report"} <= {
        r["step"] for r in by_status.get("computed", [])
    }
    assert Path("artifacts/reports/report.html").stat().st_size > 0
    assert _check_whole(workdir / "artifacts") > 0
    assert not list((workdir / "artifacts").rglob(".*.tmp")), "a killed writer's leftovers"

    third = subprocess.run(
        [pruneflow_exe(), "run"], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert third.returncode == 0, third.stderr[-3000:]
    rerun = json.loads((state / "runs" / "last.json").read_text())
    assert {r["status"] for r in rerun["records"]} == {"cached"}
    assert "all cached, nothing to do" in third.stdout
