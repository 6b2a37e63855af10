"""A Prefect server that is not there is one line naming it before the flow starts, and no
message shows a password."""

from __future__ import annotations

import time

from conftest import run_cli

from pruneflow.errors import PruneflowError, mask_credentials


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
