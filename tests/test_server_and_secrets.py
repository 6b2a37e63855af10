"""A Prefect server that is not there is one line naming it before the flow starts, a server
lost mid-run stops the run with one line while the finished steps stay in the step cache, and
no message shows a password."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import prefect_template
import yaml
from conftest import pruneflow_exe, run_cli
from test_sdd_sweep import _params as sdd_params

from pruneflow.errors import PruneflowError, mask_credentials
from pruneflow.prefect_env import stop_local_server


def test_passwords_are_masked_in_every_error():
    url = "postgresql+asyncpg://user:SECRET@db.example:5432/prefect"
    assert mask_credentials(f"bad url {url}") == (
        "bad url postgresql+asyncpg://user:***@db.example:5432/prefect"
    )
    assert "SECRET" not in str(PruneflowError(f"cannot reach {url}"))
    assert mask_credentials("http://host:4200/api") == "http://host:4200/api"


def test_a_password_given_on_the_command_line_is_not_printed(workdir):
    url = "postgresql+asyncpg://user:SECRET@db.example/prefect"
    result = run_cli("run", "dense", "--set", f"orchestration.server={url}", cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert "SECRET" not in result.stdout + result.stderr and "user:***@" in result.stderr


def test_a_server_that_does_not_answer_is_one_line_before_the_flow(workdir):
    started = time.monotonic()
    result = run_cli(
        "run",
        "dense",
        "--set",
        "orchestration.server=http://127.0.0.1:9/api",
        cwd=workdir,
        env={"PREFECT_API_URL": ""},
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "http://127.0.0.1:9/api" in lines[0], result.stderr
    assert "pruneflow server start" in lines[0] and "Traceback" not in result.stderr
    assert time.monotonic() - started < 60  # the CLI's start-up, not Prefect's retries
    assert not (workdir / "artifacts").exists()


def test_a_server_lost_mid_run_ends_the_run_with_one_line_within_the_grace():
    from pruneflow.prefect_env import server_watchdog

    lines: list[str] = []
    started = time.monotonic()
    with server_watchdog("http://127.0.0.1:9/api", grace=0.6, every=0.1, on_loss=lines.append):
        while not lines and time.monotonic() - started < 10:
            time.sleep(0.05)
    assert len(lines) == 1 and "http://127.0.0.1:9/api" in lines[0]
    assert 0.6 <= time.monotonic() - started < 5


def test_prefects_event_delivery_is_quiet_while_the_watchdog_reports_a_loss():
    """Prefect's events client warns and its EventsWorker logs an error as soon as the server
    goes; the watchdog's one line must be all the user sees (restored afterwards)."""
    import logging

    from pruneflow.prefect_env import EVENT_DELIVERY_LOGGERS, server_watchdog

    loggers = [logging.getLogger(name) for name in EVENT_DELIVERY_LOGGERS]
    assert not any(logger.disabled for logger in loggers)
    with server_watchdog("http://127.0.0.1:9/api", grace=60, on_loss=lambda _: None):
        seen: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = seen.append  # type: ignore[method-assign]
        for logger in loggers:
            logger.addHandler(handler)
            logger.error("the server went away")  # what Prefect logs when it does
            logger.removeHandler(handler)
        assert seen == []
    assert not any(logger.disabled for logger in loggers)


def _own_env(folder: Path) -> dict[str, str]:
    """This folder's own Prefect (home, local server) and state, whatever the session set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "PRUNEFLOW_STATE_DIR": str(folder / ".pruneflow")}


def _entries(folder: Path, step: str) -> list[Path]:
    return sorted((folder / ".pruneflow" / "stepcache").glob(f"{step}-*/record.json"))


def test_a_real_server_killed_mid_run_stops_it_with_one_line_and_a_rerun_resumes(tmp_path):
    """`pruneflow server stop` while `pruneflow run sdd` trains its levels (the issue's probe:
    6.4 minutes of retries and a ConnectError traceback): the run ends within the grace with
    one line and exit 2; the steps it finished are in the step cache, and the re-run, on a
    fresh server, takes them from there."""
    params = sdd_params(modes=["rewind"], final_sparsity=0.8).model_dump(mode="json")
    grace = 3.0  # short: the test waits it out
    params["orchestration"] |= {"server": "local", "server_grace": grace}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = _own_env(tmp_path)
    state = tmp_path / ".pruneflow"
    prefect_template.seed(state / "prefect")
    run = subprocess.Popen(
        [pruneflow_exe(), "run", "sdd", "--params", "params.yaml"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not _entries(tmp_path, "sdd_dense") and run.poll() is None:
            assert time.monotonic() < deadline, "the dense run never finished"
            time.sleep(0.1)
        assert run.poll() is None, run.communicate()
        assert stop_local_server(state)  # what `pruneflow server stop` does
        lost = time.monotonic()
        out, err = run.communicate(timeout=60)
        stopped_after = time.monotonic() - lost
    finally:
        if run.poll() is None:
            os.killpg(run.pid, 9)
            run.wait()
        stop_local_server(state)
    assert run.returncode == 2, err[-3000:]
    assert stopped_after < grace + 20, stopped_after  # the grace, one poll, the exit
    assert "Traceback" not in out + err, err[-3000:]
    # every line but the last is a step's progress line ("  > prepare: running")
    lines = err.splitlines()
    assert [line for line in lines if not line.startswith("  ")] == lines[-1:], err[-3000:]
    assert lines[-1].startswith("error: the Prefect server at http://127.0.0.1:")
    assert "stopped answering" in lines[-1] and "re-run to resume" in lines[-1]
    finished = {
        json.loads(r.read_text())["step"]: r for step in ("prepare", "sdd_dense")
        for r in _entries(tmp_path, step)
    }  # fmt: skip
    assert set(finished) == {"prepare", "sdd_dense"}
    levels_done = len(_entries(tmp_path, "sdd_level"))

    try:
        again = run_cli("run", "sdd", "--params", "params.yaml", cwd=tmp_path, env=env)
    finally:
        stop_local_server(state)
    assert again.returncode == 0, again.stderr[-3000:]
    log = json.loads((state / "runs" / "last.json").read_text())
    status = {}
    for record in log["records"]:
        status.setdefault(record["step"], []).append(record["status"])
    assert status["prepare"] == ["cached"] and status["sdd_dense"] == ["cached"]
    # the levels the first run finished are not computed again; the rest are
    assert status["sdd_level"].count("computed") == len(status["sdd_level"]) - levels_done
    assert status["sdd_sweep"] == ["computed"]
