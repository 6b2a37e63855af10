"""A wrong PostgreSQL URL stops `pruneflow server start` with one line, password masked. (The
smoke deployment on a server backed by PostgreSQL is tests/test_deployments.py's stack.)"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from conftest import run_cli
from pg_cluster import PASSWORD

from pruneflow.prefect_env import _free_port


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
