"""A real Prefect stack on loopback for the deployment tests: a server (SQLite or PostgreSQL),
work pools, ``prefect deploy`` of pipelines.yaml, a process worker, ``prefect deployment run``.

Everything goes through the same commands a user types (README, "Beyond one laptop"), each
bounded by a timeout; :func:`prefect_stack` stops every process it started, even when the test
fails. The worker runs flows in a throwaway checkout (symlinks to this repository's flows/ and
tasks/, copies of params.yaml and presets/), so artifacts land there, not in the repository.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prefect_template
import pytest

from pruneflow.deploy import FLOW_NAME
from pruneflow.prefect_env import start_server

REPO = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).with_name("prefect"))


def make_checkout(folder: Path) -> Path:
    """A checkout for the worker: this repository's code, its own artifacts and state."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("flows", "tasks"):
        (folder / name).symlink_to(REPO / name, target_is_directory=True)
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    shutil.copytree(REPO / "presets", folder / "presets")  # the smoke deployment's params
    return folder


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class Stack:
    """A started Prefect server and what runs against it."""

    root: Path
    url: str
    server_pid: int
    env: dict[str, str]
    workers: list[subprocess.Popen] = field(default_factory=list)

    def prefect(self, *args: str, timeout: float = 60, cwd: Path | None = None):
        """Run the ``prefect`` CLI against this server; the CompletedProcess."""
        return subprocess.run(
            [PREFECT, "--no-prompt", *args],
            cwd=cwd or self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def checked(self, *args: str, timeout: float = 60, cwd: Path | None = None) -> str:
        result = self.prefect(*args, timeout=timeout, cwd=cwd)
        assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result.stdout

    def start_worker(self, pool: str, checkout: Path) -> None:
        log = open(self.root / f"worker-{pool}.log", "ab")  # noqa: SIM115 (the worker holds it)
        env = {**self.env, "PRUNEFLOW_CHECKOUT": str(checkout), "PREFECT_LOGGING_LEVEL": "INFO"}
        self.workers.append(
            subprocess.Popen(
                [PREFECT, "worker", "start", "--pool", pool, "--name", f"test-{pool}"],
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def run_deployment(
        self, name: str, parameters: dict[str, Any] | None = None, timeout: float = 600
    ) -> dict[str, Any]:
        """``prefect deployment run FLOW/name --watch``; the finished flow run (API JSON)."""
        args = ["deployment", "run", f"{FLOW_NAME}/{name}"]
        args += ["--watch", "--watch-timeout", str(timeout)]
        if parameters:
            args += ["--params", json.dumps(parameters)]
        result = self.prefect(*args, timeout=timeout + 30)
        found = re.search(r"UUID: ([0-9a-f-]{36})", result.stdout)
        assert found, f"no flow run id in:\n{result.stdout}{result.stderr}\n{self.worker_log()}"
        run = self.api(f"flow_runs/{found.group(1)}")
        run["cli_returncode"] = result.returncode
        run["cli_output"] = result.stdout + result.stderr
        return run

    def api(self, route: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/{route}", timeout=10) as reply:
            return json.load(reply)

    def post(self, route: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.url}/{route}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.load(reply)

    def worker_log(self) -> str:
        logs = sorted(self.root.glob("worker-*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in logs)

    def stop(self) -> None:
        for proc in self.workers:
            # a process worker takes its full grace to act on SIGTERM (it waits out its poll
            # loop), 10 s of a test run's wall time for nothing: its runs have ended by now
            _stop(proc, grace=2.0)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server_pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:  # the server is this process's child: reap it, or it lingers as a zombie
                if os.waitpid(self.server_pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server_pid, signal.SIGKILL)


@contextlib.contextmanager
def prefect_stack(
    root: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None = None
) -> Iterator[Stack]:
    """A Prefect server on a free loopback port with its own PREFECT_HOME (and, when given,
    PostgreSQL at ``database_url``); stopped with every worker on exit."""
    home = root / "prefect"
    monkeypatch.setenv("PREFECT_HOME", str(home))
    if database_url:
        monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", database_url)
    # the smoke deployment's nightly schedule must not start a second run beside the test's
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED", "false")
    if not database_url:
        prefect_template.seed(home)
    record = start_server(root)
    env = {k: v for k, v in os.environ.items() if k != "PRUNEFLOW_STATE_DIR"}
    env |= {
        "PREFECT_API_URL": record["url"],
        "PREFECT_HOME": str(home),
        # the default 10 s poll would dominate a test run
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    stack = Stack(root=root, url=record["url"], server_pid=record["pid"], env=env)
    try:
        yield stack
    finally:
        stack.stop()


def deploy_smoke(stack: Stack, checkout: Path, pools: tuple[str, ...] = ("cpu",)) -> None:
    """Create ``pools``, deploy pipelines.yaml (only its smoke deployment unless every pool it
    names is among ``pools``: then ``--all``), start a worker on pool ``cpu``."""
    for pool in pools:
        stack.checked("work-pool", "create", pool, "--type", "process")
    which = ["--all"] if len(pools) > 1 else ["--name", "smoke"]
    stack.checked(
        "deploy", "--prefect-file", str(REPO / "pipelines.yaml"), *which,
        timeout=180, cwd=checkout,
    )  # fmt: skip
    stack.start_worker("cpu", checkout)


def assert_smoke_completed(stack: Stack, checkout: Path) -> dict[str, Any]:
    """Run the smoke deployment through the worker; it completes and writes its artifacts."""
    run = stack.run_deployment("smoke")
    state = run["state"]
    assert state["type"] == "COMPLETED", (
        f"smoke run ended {state['type']}: {state.get('message')}\n{run['cli_output']}\n"
        f"{stack.worker_log()}"
    )
    assert run["cli_returncode"] == 0
    art = checkout / "artifacts"
    # every method of the default pipeline ran, then the report
    for made in (
        "data/digits/symmetric-0.2/labels.parquet",
        "spdy/lenet300100/results.parquet",
        "sdd/digits-lenet300100/sweep.parquet",
        "chex/digits-resnet_mini/comparison.parquet",
        "reports/report.html",
    ):
        assert (art / made).stat().st_size > 0, made
    dense = json.loads((art / "models/digits/lenet300100/dense.json").read_text())
    assert dense["params"]["train"]["epochs"] == 2  # the smoke overrides reached the worker
    assert any((checkout / ".pruneflow" / "stepcache").iterdir())
    return run
