"""Shared fixtures.

Prefect: one ``prefect server start`` for the whole test session (the same code path as the
CLI's reusable local server), so the suite pays the server start once, not per test or per
subprocess. Every test that writes pipeline state runs in its own temporary folder.

`uv run pytest` runs on two pytest-xdist workers (pyproject's addopts: ``-n 2 --dist
loadgroup``); each worker is its own session, with its own Prefect server (own port, own
PREFECT_HOME under its own temporary folder). The tests that read one of the expensive
session results (:data:`SHARED_RESULTS`) run on one worker, so it is computed once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # flows/ and tasks/ are repository folders, not installed


# session fixtures that compute something expensive: the tests reading one share a worker
SHARED_RESULTS = ("sdd_run", "smoke_checkout")


@pytest.hookimpl(tryfirst=True)  # before xdist's hook reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in SHARED_RESULTS:
            if name in item.fixturenames:  # type: ignore[attr-defined]
                item.add_marker(pytest.mark.xdist_group(name))
                break


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """A Prefect server for the session; yields its API URL (also exported to subprocesses)."""
    from pruneflow.prefect_env import configure_environment, start_server

    state = tmp_path_factory.mktemp("prefect-state")
    os.environ["PREFECT_HOME"] = str(state / "prefect")
    configure_environment(state)
    record = start_server(state)
    os.environ["PREFECT_API_URL"] = record["url"]
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings({PREFECT_API_URL: record["url"], PREFECT_HOME: state / "prefect"}):
        yield record["url"]
    # let Prefect's background log/event senders finish while the server still answers;
    # killed first, they retry against a dead port for over a minute at interpreter exit
    from prefect._internal.concurrency.services import QueueService

    QueueService.drain_all(timeout=10)
    os.killpg(record["pid"], 15)


@pytest.fixture(scope="session")
def smoke_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One worker checkout for every smoke deployment run of the session (SQLite and
    PostgreSQL servers alike): the first run computes the smoke pipeline there, later runs
    find its steps in that checkout's cache, as a worker host's second nightly run does."""
    from prefect_stack import make_checkout

    return make_checkout(tmp_path_factory.mktemp("smoke") / "checkout")


@pytest.fixture(scope="session")
def sdd_run(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of one `pruneflow run sdd`, run as a user runs it (a subprocess, the thread
    runner, --params and --set) on three chains (finetune; rewind with reinit beside it) of two
    levels; the tests that check what such a run writes read it, none writes to it."""
    import yaml
    from test_sdd_sweep import _params

    folder = tmp_path_factory.mktemp("sdd-run")
    params = _params(final_sparsity=0.7, modes=["finetune", "rewind", "reinit"])  # 50 %, 75 %
    (folder / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    result = run_cli(
        "run", "sdd", "--params", "params.yaml", "--set", "orchestration.runner=thread",
        cwd=folder, env={"PRUNEFLOW_STATE_DIR": str(folder / ".pruneflow")}, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return folder


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder to run in, with its own pipeline state (.pruneflow)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRUNEFLOW_STATE_DIR", str(tmp_path / ".pruneflow"))
    return tmp_path


def pruneflow_exe() -> str:
    """The installed ``pruneflow`` command of this environment."""
    return shutil.which("pruneflow") or str(Path(sys.executable).with_name("pruneflow"))


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300):
    """Run the installed ``pruneflow`` command; returns the CompletedProcess."""
    exe = pruneflow_exe()
    return subprocess.run(
        [exe, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
