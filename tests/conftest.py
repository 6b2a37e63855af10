"""Shared fixtures.

Prefect: one ``prefect server start`` for the whole test session (the same code path as the
CLI's reusable local server), so the suite pays the server start once, not per test or per
subprocess. Every test that writes pipeline state runs in its own temporary folder. Servers
that tests start later begin from a copy of the first one's migrated database
(``prefect_template``), not an empty one.

`uv run pytest` runs on two pytest-xdist workers (pyproject's addopts: ``-n 2 --dist
loadgroup``); each worker is its own session, with its own Prefect server (own port, own
PREFECT_HOME under its own temporary folder). The tests that read the same session or module
fixture run on one worker, so it is computed once (:func:`pytest_collection_modifyitems`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import prefect_template
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # flows/ and tasks/ are repository folders, not installed


# Every Prefect server the suite starts (the session's, the deployment stack's, a CLI's local
# one: all inherit this environment) runs only the services Prefect's own ephemeral server runs
# for local flow runs (task-run recorder, event persister); the loop services below poll their
# tables every 5-20 s for schedules, late or paused runs, workers, leases, automations and
# cancellations no test makes. An idle server: 0.73 CPU-s a minute without them, 1.26 with.
# A value exported before pytest starts wins.
for _service in (
    "SCHEDULER", "LATE_RUNS", "FOREMAN", "PAUSE_EXPIRATIONS", "REPOSSESSOR",
    "CANCELLATION_CLEANUP", "CLEANUP_RECONCILER", "TRIGGERS",
):  # fmt: skip
    os.environ.setdefault(f"PREFECT_SERVER_SERVICES_{_service}_ENABLED", "false")

# session fixtures every worker has its own of (a Prefect server on its own port and home)
PER_WORKER = ("prefect_api", "_prefect_template")


def _shared_results(item: pytest.Item) -> set[str]:
    """What ``item`` reads that is computed once per session (the fixture's name) or once per
    test module (the module's path): this suite's session and module fixtures."""
    keys = set()
    for name, defs in item._fixtureinfo.name2fixturedefs.items():  # type: ignore[attr-defined]
        fixture = defs[-1]
        if not fixture.baseid or name in PER_WORKER:  # pytest's own, or one per worker
            continue
        if fixture.scope == "session":
            keys.add(name)
        elif fixture.scope != "function":
            keys.add(item.nodeid.split("::")[0])
    return keys


@pytest.hookimpl(tryfirst=True)  # before xdist's hook reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist each worker computes its own session and module fixtures: the tests
    that read the same one (directly or through another test that reads both) go to one
    worker, as one group, so that each is computed once."""
    group: dict[str, str] = {}  # union-find over the shared results

    def find(key: str) -> str:
        while group.setdefault(key, key) != key:
            key = group[key]
        return key

    reads = {item.nodeid: _shared_results(item) for item in items}
    for keys in reads.values():
        first, *rest = sorted(keys) or [None]
        for key in rest:
            group[find(key)] = find(first)
    for item in items:
        if reads[item.nodeid]:
            item.add_marker(pytest.mark.xdist_group(find(min(reads[item.nodeid]))))


def pytest_collection_finish(session: pytest.Session) -> None:
    """A worker whose groups pytest-xdist did not apply (it marks a grouped test's node id
    with ``@group``) would compute every shared fixture again: stop with one line instead."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or session.config.option.dist != "loadgroup":
        return
    for item in session.items:
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
            raise pytest.UsageError(
                f"pytest-xdist did not group {item.nodeid}: this pytest and pytest-xdist do not "
                "work together (pytest-dev/pytest-xdist#1386); see pyproject's pytest pin"
            )


@pytest.fixture(scope="session", autouse=True)
def _prefect_template(tmp_path_factory: pytest.TempPathFactory) -> None:
    prefect_template.configure(tmp_path_factory)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """A Prefect server for the session; yields its API URL (also exported to subprocesses)."""
    from pruneflow.prefect_env import configure_environment, start_server

    state = tmp_path_factory.mktemp("prefect-state")
    os.environ["PREFECT_HOME"] = str(state / "prefect")
    configure_environment(state)
    prefect_template.seed(state / "prefect")
    record = start_server(state)
    prefect_template.keep(state / "prefect")
    os.environ["PREFECT_API_URL"] = record["url"]
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings({PREFECT_API_URL: record["url"], PREFECT_HOME: state / "prefect"}):
        yield record["url"]
    # let Prefect's background log/event senders finish while the server still answers;
    # killed first, they retry against a dead port for over a minute at interpreter exit
    from prefect._internal.concurrency.services import QueueService

    QueueService.drain_all(timeout=10)
    os.killpg(record["pid"], signal.SIGTERM)
    # reaped, so that its CPU time counts in the session's (and no zombie is left)
    deadline = time.monotonic() + 15
    with contextlib.suppress(ChildProcessError):  # reaped already (subprocess's own cleanup)
        while time.monotonic() < deadline and not os.waitpid(record["pid"], os.WNOHANG)[0]:
            time.sleep(0.2)


@pytest.fixture(scope="session")
def database_url():
    """A throwaway PostgreSQL cluster for the session (``pg_cluster``): the deployment stack's
    server keeps its state there, as a team's shared server does, and the wrong-URL tests
    start from its URL."""
    from pg_cluster import postgres_cluster

    with postgres_cluster() as url:
        yield url


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
