"""orchestration.runner: dask. `pruneflow run sdd` on a LocalCluster of 2 worker processes on
loopback writes the same results, byte for byte (tensors, tables, records, plots), as the
thread runner; the workers write into the run's folder and step cache (a rerun is all cache
hits); an existing scheduler's workers are checked for the folder they run in; an address
nobody answers on is one clear error within a bounded time, not a hang.

Each run is its own `pruneflow` process in its own folder, as a user runs it: Prefect's result
store is bound to the pipeline state dir when the tasks are imported, so two in-process runs in
two folders would share it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from pruneflow.config import DaskParams
from pruneflow.errors import PruneflowError
from pruneflow.prefect_env import _free_port


def _digest(path: Path) -> str:
    """A hash of the file's bytes: no output carries a wall-clock figure, and safetensors
    headers are written in one order (pruneflow.io.save_tensors)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): _digest(p)
        for p in sorted((root / "artifacts").rglob("*"))
        if p.is_file()
    }


def _sdd(folder: Path, *overrides: str):
    """`pruneflow run sdd` in ``folder`` with the params of the session's shared thread-runner
    run (conftest.sdd_run: three chains of two levels)."""
    sets = [arg for text in overrides for arg in ("--set", text)]
    result = run_cli(
        "run", "sdd", "--params", "params.yaml", *sets,
        cwd=folder, env={"PRUNEFLOW_STATE_DIR": str(folder / ".pruneflow")}, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return result


def _stamps(root: Path) -> dict[str, tuple[int, int]]:
    # a step that runs again replaces its outputs (temp file + rename): a new inode
    return {
        str(p): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (root / "artifacts").rglob("*")
        if p.is_file()
    }


def test_local_cluster_of_two_processes_writes_what_the_thread_runner_writes(sdd_run, tmp_path):
    (tmp_path / "dask").mkdir()
    shutil.copy(sdd_run / "params.yaml", tmp_path / "dask" / "params.yaml")
    dask = ("orchestration.runner=dask", "orchestration.dask.workers=2")
    _sdd(tmp_path / "dask", *dask)

    files = _hashes(tmp_path / "dask")
    assert files == _hashes(sdd_run)  # the thread runner's run of the same params
    assert any(name.endswith("sweep.parquet") for name in files)
    assert sum(name.endswith(".safetensors") for name in files) >= 7  # dense + 6 levels
    # the workers wrote into this run's folder and its step cache, nowhere else
    stepcache = tmp_path / "dask" / ".pruneflow" / "stepcache"
    assert len([d for d in stepcache.iterdir() if d.name.startswith("sdd_level")]) == 6

    # a rerun in that folder finds every step the workers ran in its step cache: nothing is
    # rewritten (on the thread runner: a second cluster's start-up would check nothing more)
    before = _stamps(tmp_path / "dask")
    rerun = _sdd(tmp_path / "dask", "orchestration.runner=thread")
    assert _stamps(tmp_path / "dask") == before
    assert "all cached, nothing to do" in rerun.stdout


def test_an_existing_schedulers_workers_must_run_in_the_flows_folder(tmp_path, monkeypatch):
    from distributed import LocalCluster

    from tasks.runner import check_scheduler

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRUNEFLOW_STATE_DIR", str(tmp_path / ".pruneflow"))
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster:  # fmt: skip
        dask = DaskParams(address=cluster.scheduler_address, connect_timeout=10)
        check_scheduler(dask)  # same folder, same state dir: fine
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        with pytest.raises(PruneflowError, match=r"runs in folder .* this flow in .*elsewhere"):
            check_scheduler(dask)


def test_a_scheduler_address_that_does_not_answer_is_one_line_in_bounded_time(
    prefect_api, tmp_path
):
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    # a hang (the connect timeout not honoured) never returns: run_cli's timeout fails the
    # test; how long the imports take on a loaded host is no part of the check
    result = run_cli(
        "run", "sdd", "--set", "orchestration.runner=dask",
        "--set", f"orchestration.dask.address={address}",
        "--set", "orchestration.dask.connect_timeout=2",
        cwd=tmp_path, env={"PRUNEFLOW_STATE_DIR": str(tmp_path / ".pruneflow")}, timeout=600,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    expected = f"orchestration.dask.address {address}: no Dask scheduler answered within 2 s"
    assert expected in lines[0]
    assert not (tmp_path / "artifacts").exists()  # refused before any step ran
    assert os.environ.get("PREFECT_API_URL") == prefect_api
