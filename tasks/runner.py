"""Which task runner a flow's fan-out items run on: ``orchestration.runner`` in params.

``thread`` runs them on a bounded thread pool (``orchestration.workers``, one process).
``dask`` hands every submitted task to Dask worker processes through prefect-dask: a
LocalCluster of ``orchestration.dask.workers`` processes on loopback, or the scheduler at
``orchestration.dask.address``. Tasks exchange small JSON records (paths and content hashes),
never tensors, so a worker process only needs to see the same files: the same folder (cwd) and
the same pipeline state dir. A local cluster inherits both; for a remote scheduler
:func:`check_scheduler` verifies it before the flow starts, so a wrong address or a worker in
another folder is one clear error, not a hang or artifacts written where nobody reads them.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from pruneflow import config
from pruneflow.config import DaskParams, Params
from pruneflow.errors import PruneflowError
from pruneflow.steps.base import state_dir

REPO = Path(__file__).resolve().parent.parent
# torch's OpenMP threads spin while they wait for work; two worker processes spinning on the
# same cores starve each other (an sdd level took 10-20x longer than in one process).
# Passive waiting gives the cores back. A user's own setting wins.
WORKER_ENV = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def where() -> dict[str, str]:
    """What a process resolves relative artifact paths and the step cache against."""
    return {"cwd": os.getcwd(), "state": str(state_dir().resolve())}


def _worker_view(repo: str) -> dict[str, Any]:
    # runs on every Dask worker: can it import the tasks, and where does it write?
    import importlib.util

    if repo not in sys.path and Path(repo, "tasks").is_dir():
        sys.path.insert(0, repo)
    return {**where(), "tasks": importlib.util.find_spec("tasks") is not None}


def check_scheduler(dask: DaskParams) -> None:
    """Reach ``dask.address`` within ``dask.connect_timeout`` seconds and check its workers.

    Raises PruneflowError (one line) when the scheduler does not answer, has no workers, or a
    worker runs in another folder or state dir than this process or cannot import ``tasks``.
    """
    from distributed import Client

    address = dask.address
    try:
        client = Client(address, timeout=dask.connect_timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise PruneflowError(
            f"orchestration.dask.address {address}: no Dask scheduler answered within "
            f"{dask.connect_timeout:g} s ({type(exc).__name__}); start one "
            f"(`dask scheduler`) or set orchestration.dask.address: null for a local cluster"
        ) from None
    try:
        views = client.run(_worker_view, str(REPO))
    finally:
        client.close()
    if not views:
        raise PruneflowError(
            f"the Dask scheduler at {address} has no workers: start some in this folder "
            f"(`cd {os.getcwd()} && dask worker {address}`)"
        )
    here = where()
    for worker, view in sorted(views.items()):
        if not view["tasks"]:
            raise PruneflowError(
                f"Dask worker {worker} cannot import pruneflow's tasks/: start it from the "
                "repository checkout (`uv run dask worker ...` in the checkout)"
            )
        for key, label in (("cwd", "folder"), ("state", "pipeline state dir")):
            if view[key] != here[key]:
                raise PruneflowError(
                    f"Dask worker {worker} runs in {label} {view[key]}, this flow in "
                    f"{here[key]}: artifacts are exchanged by path, so start the workers in "
                    "the same folder (a shared mount at the same path, same PRUNEFLOW_STATE_DIR)"
                )


def host_slots(params: Params) -> int:
    """How many tasks the runner runs at once on this host's cores: the thread runner's
    workers, a local Dask cluster's processes; 1 for a remote scheduler (its workers bring
    their own cores)."""
    o = params.orchestration
    if o.runner == "thread":
        return o.workers or os.cpu_count() or 1
    return 1 if o.dask.address else o.dask.workers


def sharing_threads(params: dict[str, Any], running: int) -> dict[str, Any]:
    """``params`` for one of ``running`` tasks submitted together: each gets its share of
    ``runtime.threads`` (at least one), so that the tasks the runner runs side by side on this
    host do not ask for more threads than a step running alone. Two gradual-pruning or CHEX
    runs of two threads each put four busy threads on two cores; the thread count is no part
    of a step's fingerprint, so this changes speed, not what is cached."""
    parsed = config.from_dict(params)
    side_by_side = max(1, min(running, host_slots(parsed)))
    share = max(1, parsed.runtime.threads // side_by_side)
    if share == parsed.runtime.threads:
        return params
    return {**params, "runtime": {**params.get("runtime", {}), "threads": share}}


def task_runner(params: Params) -> TaskRunner:
    """The task runner ``params`` ask for.

    The thread runner is bounded: Prefect's own pool is unbounded, and twelve gradual-pruning
    runs started at once, each with torch's threads, only oversubscribe two cores (and hold
    twelve models' memory).
    """
    if params.orchestration.runner == "thread":
        return ThreadPoolTaskRunner(max_workers=params.orchestration.workers or os.cpu_count() or 1)
    # Dask logs every worker's start and stop at INFO; worker processes read this at start-up
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    from prefect_dask import DaskTaskRunner

    dask = params.orchestration.dask
    if dask.address:
        check_scheduler(dask)
        return DaskTaskRunner(address=dask.address, client_kwargs={"timeout": dask.connect_timeout})
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": dask.workers,
            # one task per process at a time: torch's own threads (runtime.threads) do the rest
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            # the scheduler's HTTP endpoints on a free port: the fixed default (8787) clashes
            # with a second cluster on the host (the dashboard itself needs bokeh: not here)
            "dashboard_address": "127.0.0.1:0",
            "env": WORKER_ENV,
        },
        client_kwargs={"timeout": dask.connect_timeout},
    )


def with_runner(flow: Flow, params: Params) -> Flow:
    """``flow`` on the task runner ``params`` ask for."""
    return flow.with_options(task_runner=task_runner(params))
