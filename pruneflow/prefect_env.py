"""How pruneflow talks to Prefect: environment defaults and one reusable local server.

A Prefect flow needs an API server. Without one, every process starts a temporary server
(8-15 s on a 2-core CPU, see docs/benchmarks.md), which a user would pay on
every ``pruneflow run``. With ``orchestration.server: local`` (the default) the CLI starts one
``prefect server start`` on a free loopback port the first time, records it in
``.pruneflow/server.json``, and every later run reuses it while it answers. Stop it with
``pruneflow server stop``. DVC stages never need a server: they run steps directly.

This module only sets environment variables and starts a subprocess; it does not import Prefect.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from pruneflow.errors import PruneflowError
from pruneflow.prefect_db import check_database_url


def configure_environment(state: Path) -> None:
    """Prefect settings pruneflow relies on; a value the user already exported wins."""
    defaults = {
        "PREFECT_HOME": str((state / "prefect").resolve()),
        # nothing may phone home: a firewall that drops packets would stall every run
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # pruneflow prints one line per step; Prefect's INFO chatter would drown it
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # a loaded 2-core machine can take longer than Prefect's 20 s default to start one
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    # Prefect creates its home without parents and warns when it cannot
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def require_server(api_url: str, timeout: float = 5.0) -> None:
    """Raise one line when no Prefect server answers at ``api_url``: before the flow starts,
    not after minutes of Prefect's own retries and a traceback of hundreds of lines."""
    if not healthy(api_url, timeout):
        raise PruneflowError(
            f"no Prefect server answers at {api_url}: start one (`pruneflow server start`, "
            "or `prefect server start` and export its PREFECT_API_URL), or set "
            "orchestration.server: local to let pruneflow start and reuse its own"
        )


# how often a flow asks its server at most (orchestration.server_grace: how long it waits)
SERVER_POLL_S = 5.0


def _stop_run(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    os._exit(2)  # Prefect's client would retry for minutes and end in a traceback


# Prefect's client-side event delivery (task-run events over a websocket) logs a warning and an
# error the moment its server goes away, before the watchdog's grace runs out; the watchdog
# reports a lost server once, so these loggers stay quiet while it watches
EVENT_DELIVERY_LOGGERS = ("prefect.events.clients", "prefect._internal.concurrency")


@contextlib.contextmanager
def _quiet_event_delivery() -> Iterator[None]:
    # disabled, not a level: prefect._internal's SafeLogger ignores logger levels
    loggers = [logging.getLogger(name) for name in EVENT_DELIVERY_LOGGERS]
    states = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, state in zip(loggers, states, strict=True):
            logger.disabled = state


@contextlib.contextmanager
def server_watchdog(
    api_url: str | None,
    grace: float,
    every: float | None = None,
    on_loss: Callable[[str], None] = _stop_run,
) -> Iterator[None]:
    """While the block runs a flow, ask the server at ``api_url`` every ``every`` seconds
    (default: a third of ``grace``, at most :data:`SERVER_POLL_S`);
    when it has not answered for ``grace`` seconds, ``on_loss`` gets one line (by default it
    is printed and the process ends, exit 2). Finished steps are in the step cache, so the
    re-run resumes. ``api_url`` None (an ephemeral server in this process): nothing to watch.
    """
    if not api_url:
        yield
        return
    every = every if every is not None else min(SERVER_POLL_S, grace / 3)
    done = threading.Event()

    def watch() -> None:
        last_seen = time.monotonic()
        while not done.wait(every):
            if healthy(api_url, timeout=min(5.0, every)):
                last_seen = time.monotonic()
            elif time.monotonic() - last_seen >= grace:
                on_loss(
                    f"error: the Prefect server at {api_url} stopped answering "
                    f"{grace:.0f} s ago; the finished steps are kept (step cache): start it "
                    "again (`pruneflow server start`) and re-run to resume"
                )
                return

    thread = threading.Thread(target=watch, name="prefect-server-watchdog", daemon=True)
    thread.start()
    try:
        with _quiet_event_delivery():
            yield
    finally:
        done.set()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _record(state: Path) -> Path:
    return state / "server.json"


def start_server(state: Path, timeout: float = 120.0) -> dict:
    """Start ``prefect server start`` on a free loopback port; return its record once healthy."""
    configure_environment(state)
    # a wrong PostgreSQL URL: one line now, not a traceback in the server's log
    check_database_url()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log_path = state / "prefect" / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    prefect_cli = Path(sys.executable).with_name("prefect")
    command = [
        str(prefect_cli) if prefect_cli.exists() else "prefect",
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PREFECT_API_URL": url},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-800:]
            raise PruneflowError(f"Prefect server exited with code {proc.returncode}: {tail}")
        if healthy(url):
            return {"url": url, "pid": proc.pid, "port": port, "log": str(log_path)}
        time.sleep(0.25)
    proc.terminate()
    raise PruneflowError(
        f"Prefect server did not answer on {url} within {timeout:.0f} s (log: {log_path})"
    )


def ensure_local_server(state: Path) -> tuple[str, bool]:
    """The URL of this project's local server, starting it if none answers. (url, started)."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two CLIs starting at once share one server
        record_path = _record(state)
        if record_path.exists():
            with contextlib.suppress(ValueError, OSError):
                record = json.loads(record_path.read_text())
                if healthy(record["url"]):
                    return record["url"], False
        record = start_server(state)
        record_path.write_text(json.dumps(record))
        return record["url"], True


def stop_local_server(state: Path) -> bool:
    """Stop the recorded local server; False when none was running."""
    record_path = _record(state)
    if not record_path.exists():
        return False
    try:
        record = json.loads(record_path.read_text())
        os.killpg(record["pid"], signal.SIGTERM)
        stopped = True
    except (ValueError, OSError, KeyError):
        stopped = False
    record_path.unlink(missing_ok=True)
    return stopped


def server_status(state: Path) -> str | None:
    """The recorded local server's URL if it answers, else None."""
    with contextlib.suppress(ValueError, OSError, KeyError):
        record = json.loads(_record(state).read_text())
        if healthy(record["url"]):
            return record["url"]
    return None
