"""A migrated Prefect SQLite database, made once per test run and copied into the home of
every SQLite server a test starts afterwards.

A server's first start on an empty home creates and migrates its schema: 12.8 CPU-s to
healthy against 5.9 from a copy of a migrated database (measured here, one start each). The
copy is taken with SQLite's backup API from the first server of the run once it answers, so
it is a consistent snapshot of a schema at this Prefect's head; a home that already has a
database is left alone. The template lives in the run's shared temporary root (both xdist
workers see it), never across runs, so a Prefect upgrade cannot meet an old schema.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

DB_NAME = "prefect.db"  # PREFECT_API_DATABASE_CONNECTION_URL's default under PREFECT_HOME
_template: Path | None = None


def configure(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Put the template in the run's temporary root, shared by the xdist workers."""
    global _template
    base = tmp_path_factory.getbasetemp()
    _template = (
        base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    ) / "prefect-template"


def seed(home: Path) -> None:
    """Copy the template into ``home`` (a PREFECT_HOME) when there is one and ``home`` has no
    database yet."""
    if _template is None or not (_template / DB_NAME).exists() or (home / DB_NAME).exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(_template / DB_NAME, home / DB_NAME)


def keep(home: Path) -> None:
    """Make ``home``'s database (its server answering, so migrated) the template, unless one
    exists."""
    if _template is None or not (home / DB_NAME).exists():
        return
    _template.mkdir(parents=True, exist_ok=True)
    with open(_template / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (_template / DB_NAME).exists():
            return
        partial = _template / f"{DB_NAME}.partial"
        with sqlite3.connect(home / DB_NAME) as source, sqlite3.connect(partial) as copy:
            source.backup(copy)
        copy.close()
        partial.rename(_template / DB_NAME)
