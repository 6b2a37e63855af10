"""What a deployed run does on the worker's host before any step: find the checkout, validate
the params there, and check that this host has what they need.

A Prefect worker on another host runs a deployment's flow in a fresh process. Its pull step
(``pipelines.yaml``) is :func:`enter_checkout`: it moves that process into the repository
checkout of *this* host, resolved at run time on the worker (so a checkout at another path on
each host works, and nothing of the deploying machine's file system is baked into the
deployment). The deployed flow then calls :func:`worker_params`: the params file and
``--set``-style overrides are read and validated here, on the worker, against the checkout's
code, and a data root the params need but this host lacks is one clear error before any work.

This module imports no Prefect.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import pruneflow
from pruneflow import config
from pruneflow.errors import PruneflowError

CHECKOUT_ENV = "PRUNEFLOW_CHECKOUT"
# shipped inside packages; every other data set is read from data.root
EMBEDDED = frozenset({"digits", "mnist5k"})


def _is_checkout(folder: Path) -> bool:
    return (folder / "flows").is_dir() and (folder / "tasks").is_dir()


def checkout(directory: str | None = None) -> Path:
    """This host's checkout: ``directory``, else $PRUNEFLOW_CHECKOUT, else the checkout the
    installed pruneflow package lives in (``uv sync`` installs it editable)."""
    chosen = directory or os.environ.get(CHECKOUT_ENV)
    folder = Path(chosen).expanduser() if chosen else Path(pruneflow.__file__).parent.parent
    if not _is_checkout(folder):
        source = (
            f"{CHECKOUT_ENV}={chosen}" if chosen else f"the installed pruneflow's folder {folder}"
        )
        raise PruneflowError(
            f"worker host {socket.gethostname()}: {source} is not a pruneflow checkout "
            f"(no flows/ and tasks/ there); clone the repository on this host and start the "
            f"worker with {CHECKOUT_ENV} set to it"
        )
    return folder.resolve()


def enter_checkout(directory: str | None = None) -> dict[str, str]:
    """Prefect pull step: run the deployment in this host's checkout (see :func:`checkout`).

    Also puts the checkout on ``sys.path``: ``flows/`` and ``tasks/`` are repository folders,
    and Dask worker processes spawned later inherit the path.
    """
    folder = checkout(directory)
    os.chdir(folder)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return {"directory": str(folder)}


def _datasets(params: config.Params, target: str) -> set[str]:
    """The data sets a deployed target reads: a method's own, or all of them for ``all``."""
    methods = {"all": config.SCOPED_METHODS, "profile": ("spdy",)}.get(target, (target,))
    found = {params.data.dataset} if target in ("all", "dense") else set()
    return found | {getattr(params, m).dataset for m in methods if m in config.SCOPED_METHODS}


def worker_params(
    params_file: str, overrides: list[str] | None = None, target: str = "all"
) -> dict[str, Any]:
    """Load and validate the params on this host; refuse a data root that ``target`` needs
    and this host does not have. Returns the params as the JSON dict the flows take."""
    params = config.load(params_file, overrides or [])
    needed = sorted(_datasets(params, target) - EMBEDDED)
    root = Path(params.data.root)
    if needed and not root.is_dir():
        raise PruneflowError(
            f"worker host {socket.gethostname()}: data.root {root.resolve()} does not exist "
            f"(needed for data set {', '.join(needed)}); put the data there or pass "
            "overrides: ['data.root=/path/on/this/host']"
        )
    return params.model_dump(mode="json")
