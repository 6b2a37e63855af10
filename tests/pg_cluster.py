"""A throwaway PostgreSQL cluster for tests: initdb in a temporary folder, pg_ctl on a free
loopback port, one database with a password-protected owner; stopped and removed on exit.

PostgreSQL refuses to run as root, and CI runs as root: then every server command runs as the
``postgres`` system user (Debian's package creates it) through ``runuser``, in a folder that
user owns. Without the binaries (Debian's ``postgresql``; ``.ci/run`` installs it) the test is
skipped on a developer machine and fails under CI (``CI`` set).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pruneflow.prefect_env import _free_port

PASSWORD = "pruneflow-test"


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the PostgreSQL test: {message}")
    pytest.skip(f"{message}; under CI this test fails instead")


def _binaries() -> Path:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's newest version."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parent.parent.name.split(".")[0]),
    )
    if not versions:
        _unavailable("PostgreSQL not found (pg_ctl, initdb); `apt-get install -y postgresql`")
    return Path(versions[-1]).parent


def _as_server_user() -> tuple[list[str], int | None]:
    """The command prefix that runs a server command, and the uid to own its folder."""
    if os.geteuid() != 0:
        return [], None
    try:
        uid = pwd.getpwnam("postgres").pw_uid
    except KeyError:
        _unavailable("running as root, and there is no `postgres` user to run PostgreSQL as")
    return ["runuser", "-u", "postgres", "--"], uid


async def _create_database(port: int, name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(
        host="127.0.0.1", port=port, user="prefect", password=PASSWORD, database="postgres"
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}" OWNER prefect')
    finally:
        await admin.close()


@contextlib.contextmanager
def postgres_cluster(database: str = "prefect") -> Iterator[str]:
    """A running cluster with ``database``; yields its postgresql+asyncpg URL."""
    bindir = _binaries()
    prefix, owner = _as_server_user()
    # not under pytest's tmp folders: those are root-only, and the server user must enter
    root = Path(tempfile.mkdtemp(prefix="pruneflow-pg-"))
    if owner is not None:
        os.chown(root, owner, -1)
    data, log, pwfile = root / "data", root / "server.log", root / "password"
    pwfile.write_text(PASSWORD + "\n")
    if owner is not None:
        os.chown(pwfile, owner, -1)
    port = _free_port()

    def run(*args: str, timeout: float = 90) -> None:
        result = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=root
        )
        if result.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise AssertionError(f"{' '.join(args)}: {result.stdout}{result.stderr}\n{tail}")

    started = False
    try:
        run(
            str(bindir / "initdb"), "-D", str(data), "-U", "prefect", f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg_ctl = str(bindir / "pg_ctl")
        run(pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        started = True
        asyncio.run(_create_database(port, database))
        yield f"postgresql+asyncpg://prefect:{PASSWORD}@127.0.0.1:{port}/{database}"
    finally:
        for mode in ("fast", "immediate") if started else ():
            try:
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop", timeout=30)
                break
            except (AssertionError, subprocess.TimeoutExpired):
                continue
        shutil.rmtree(root, ignore_errors=True)
