"""A team's shared server: Prefect's server on PostgreSQL (PREFECT_API_DATABASE_CONNECTION_URL),
a throwaway cluster on loopback, the smoke deployment run through a process worker; and a
wrong PostgreSQL URL stops `pruneflow server start` with one line, password masked."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest
from conftest import run_cli
from pg_cluster import PASSWORD, postgres_cluster
from prefect_stack import assert_smoke_completed, deploy_smoke, prefect_stack

from pruneflow.prefect_env import _free_port


@pytest.fixture(scope="module")
def database_url():
    with postgres_cluster() as url:
        yield url


async def _count_flow_runs(url: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return await connection.fetchval("SELECT count(*) FROM flow_run")
    finally:
        await connection.close()


def test_smoke_deployment_on_a_server_backed_by_postgresql(
    database_url, smoke_checkout, tmp_path, monkeypatch
):
    # the checkout the SQLite server's smoke run used, when that ran first: its steps are cache
    # hits, and what this test checks is the server's database, not the pipeline's arithmetic
    work = smoke_checkout
    with prefect_stack(tmp_path, monkeypatch, database_url=database_url) as stack:
        deploy_smoke(stack, work)
        assert_smoke_completed(stack, work)
    # the server kept its state in PostgreSQL, not in a SQLite file of its home
    assert asyncio.run(_count_flow_runs(database_url)) >= 1
    assert not list((tmp_path / "prefect").glob("*.db"))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"password": "wrong"}, "PostgreSQL refused: password authentication failed"),
        ({"path": "/nope"}, 'PostgreSQL refused: database "nope" does not exist'),
        ({"port": "closed"}, "cannot reach PostgreSQL at 127.0.0.1:"),
        ({"scheme": "postgresql"}, "Prefect's server needs the asyncpg driver"),
    ],
)
def test_a_wrong_postgresql_url_is_one_line(database_url, tmp_path, change, expected):
    parts = urlsplit(database_url)
    netloc = parts.netloc
    if "password" in change:
        netloc = netloc.replace(f":{PASSWORD}@", f":{change['password']}@")
    if "port" in change:
        netloc = f"{netloc.rsplit(':', 1)[0]}:{_free_port()}"
    url = parts._replace(
        scheme=change.get("scheme", parts.scheme),
        netloc=netloc,
        path=change.get("path", parts.path),
    ).geturl()
    result = run_cli(
        "server", "start", cwd=tmp_path, timeout=60,
        env={
            "PREFECT_API_DATABASE_CONNECTION_URL": url,
            "PRUNEFLOW_STATE_DIR": str(tmp_path / ".pruneflow"),
            "PREFECT_HOME": str(tmp_path / "prefect"),
        },
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0] and "PREFECT_API_DATABASE_CONNECTION_URL=" in lines[0]
    assert PASSWORD not in lines[0] and "wrong" not in lines[0]  # masked
    assert not (tmp_path / ".pruneflow" / "server.json").exists()  # no server started
