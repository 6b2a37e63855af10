"""The Prefect server's database: SQLite in PREFECT_HOME (the default) or a shared PostgreSQL
named by ``PREFECT_API_DATABASE_CONNECTION_URL``.

A server started on a wrong PostgreSQL URL dies with a long traceback in its log (or, on an
address that drops packets, hangs in its start-up). :func:`check_database_url` connects first,
with a bounded timeout, and says in one line what is wrong (password masked).

This module imports no Prefect.
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import urlsplit, urlunsplit

from pruneflow.errors import PruneflowError

URL_ENV = "PREFECT_API_DATABASE_CONNECTION_URL"
FORM = "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE"


def masked(url: str) -> str:
    """``url`` with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def _connect(dsn: str, timeout: float) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=timeout)
    await connection.close()


def check_database_url(url: str | None = None, timeout: float = 10.0) -> None:
    """Refuse, in one line, a database URL the Prefect server could not use.

    ``url`` defaults to $PREFECT_API_DATABASE_CONNECTION_URL; unset or SQLite: nothing to check.
    """
    url = url if url is not None else os.environ.get(URL_ENV)
    if not url or url.startswith("sqlite+aiosqlite:"):
        return
    shown = masked(url)
    scheme = url.partition("://")[0]
    if scheme != "postgresql+asyncpg":
        raise PruneflowError(
            f"{URL_ENV}={shown}: Prefect's server needs the asyncpg driver, {FORM} "
            "(or sqlite+aiosqlite:///path/prefect.db)"
        )
    parts = urlsplit(url)
    if not parts.hostname or not parts.path.strip("/"):
        raise PruneflowError(f"{URL_ENV}={shown}: expected {FORM}")
    try:
        port = parts.port
    except ValueError:
        raise PruneflowError(f"{URL_ENV}={shown}: the port is not a number") from None
    dsn = urlunsplit(parts._replace(scheme="postgresql"))
    try:
        asyncio.run(_connect(dsn, timeout))
    except OSError as exc:  # TimeoutError is one
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or exc
        raise PruneflowError(
            f"{URL_ENV}={shown}: cannot reach PostgreSQL at {parts.hostname}:{port or 5432} "
            f"within {timeout:g} s ({reason})"
        ) from None
    except Exception as exc:  # asyncpg's server errors: wrong password, no such database
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PruneflowError(f"{URL_ENV}={shown}: PostgreSQL refused: {message}") from None
