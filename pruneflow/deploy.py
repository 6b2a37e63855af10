"""Deploying pipelines.yaml: read it, check its work pools exist on the server, then hand it to
``prefect deploy``.

``prefect deploy`` itself refuses a deployment whose pool is missing, with a traceback-sized
message and only after importing every entrypoint; :func:`deploy` checks every selected
deployment's pool first (one HTTP call each) and names all that are missing in one line.

This module imports no Prefect: it speaks the server's REST API and runs the ``prefect`` CLI.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pruneflow.errors import PruneflowError

# the flow of flows/deployed.py: every deployment is FLOW_NAME/<deployment name>
FLOW_NAME = "pruneflow-deployment"
# every flow by the name `pruneflow run NAME` and a deployment's `target` give it
FLOWS: dict[str, str] = {
    "all": "flows.pipeline:pipeline",
    "dense": "flows.dense:dense",
    "spdy": "flows.spdy:spdy",
    "sdd": "flows.double_descent:double_descent",
    "chex": "flows.chex:chex",
    "profile": "flows.layer_times:profile_tables",
    # structured: its own flow and preset, not part of "all"
    "structured": "flows.structured:structured",
}


def load_flow(name: str) -> Any:
    """The flow object ``FLOWS[name]`` names (imports Prefect: call it from a flow's process)."""
    import importlib

    if name not in FLOWS:
        raise PruneflowError(f"unknown flow '{name}'; choose one of: {', '.join(FLOWS)}")
    module, _, attr = FLOWS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Deployment:
    name: str
    entrypoint: str
    pool: str
    parameters: dict[str, Any]
    tags: tuple[str, ...]
    schedules: tuple[dict[str, Any], ...]


def read_pipelines(path: str | Path = "pipelines.yaml") -> list[Deployment]:
    """The deployments of a Prefect project file, each with a name, entrypoint and pool."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PruneflowError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PruneflowError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    found = tree.get("deployments") if isinstance(tree, dict) else None
    if not isinstance(found, list) or not found:
        raise PruneflowError(f"{path}: no `deployments:` list")
    out = []
    for i, entry in enumerate(found):
        name = entry.get("name") if isinstance(entry, dict) else None
        pool = (entry.get("work_pool") or {}).get("name") if name else None
        if not name or not entry.get("entrypoint") or not pool:
            raise PruneflowError(
                f"{path}: deployment #{i + 1} needs a name, an entrypoint and work_pool.name"
            )
        out.append(
            Deployment(
                name=name,
                entrypoint=entry["entrypoint"],
                pool=pool,
                parameters=entry.get("parameters") or {},
                tags=tuple(entry.get("tags") or ()),
                schedules=tuple(entry.get("schedules") or ()),
            )
        )
    return out


def _get(api_url: str, route: str, timeout: float = 10.0) -> int:
    """HTTP status of GET {api_url}/{route}; the server's basic auth when one is set."""
    request = urllib.request.Request(f"{api_url.rstrip('/')}/{route}")
    if auth := os.environ.get("PREFECT_API_AUTH_STRING"):
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PruneflowError(f"Prefect server {api_url} does not answer: {reason}") from None


def missing_pools(api_url: str, pools: list[str]) -> list[str]:
    """The pools of ``pools`` that the server does not have."""
    gone = []
    for pool in dict.fromkeys(pools):
        status = _get(api_url, f"work_pools/{urllib.parse.quote(pool, safe='')}")
        if status == 404:
            gone.append(pool)
        elif status != 200:
            raise PruneflowError(f"Prefect server {api_url}: reading work pool {pool}: {status}")
    return gone


def select(deployments: list[Deployment], names: list[str]) -> list[Deployment]:
    """The deployments called ``names`` (all of them when empty), in file order."""
    known = {d.name for d in deployments}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PruneflowError(
            f"no deployment named {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
        )
    return [d for d in deployments if not names or d.name in names]


def deploy(prefect_file: Path, names: list[str], api_url: str, cwd: Path) -> list[Deployment]:
    """``prefect deploy`` the named deployments (all when empty) to ``api_url``.

    Every selected deployment's work pool must exist first: one line names those missing and
    how to create them. ``cwd`` is the checkout the entrypoints are relative to.
    """
    chosen = select(read_pipelines(prefect_file), names)
    absent = missing_pools(api_url, [d.pool for d in chosen])
    if absent:
        users = [d.name for d in chosen if d.pool in absent]
        create = "; ".join(f"prefect work-pool create {p} --type process" for p in absent)
        raise PruneflowError(
            f"work pool {', '.join(absent)} (used by deployment {', '.join(users)}) does not "
            f"exist on {api_url}: create it first ({create})"
        )
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect) if prefect.exists() else "prefect", "--no-prompt", "deploy"]
    command += ["--prefect-file", str(prefect_file.resolve())]
    for d in chosen:
        command += ["--name", d.name]
    result = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PREFECT_API_URL": api_url},
    )
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
        last = next((line for line in reversed(lines) if line), "no output")
        raise PruneflowError(f"prefect deploy --prefect-file {prefect_file} failed: {last}")
    return chosen
