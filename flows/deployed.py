"""The entrypoint of every deployment in pipelines.yaml: one flow, the method a parameter.

Deployment parameters are what a user would type: a params file (relative to the worker's
checkout) and ``--set``-style overrides. They are loaded and validated on the worker, against
its own checkout and data, then the method's flow runs as a subflow on the task runner the
params ask for (``orchestration.runner``).
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from flows.chex import chex
from flows.dense import dense
from flows.double_descent import double_descent
from flows.layer_times import profile_tables
from flows.pipeline import pipeline
from flows.spdy import spdy
from pruneflow.config import from_dict
from pruneflow.deploy import FLOW_NAME
from pruneflow.worker import worker_params
from tasks.runner import with_runner

FLOWS = {
    "all": pipeline,
    "dense": dense,
    "spdy": spdy,
    "sdd": double_descent,
    "chex": chex,
    "profile": profile_tables,
}


@flow(name=FLOW_NAME, description="a pruneflow flow, params loaded on the worker")
def deployed(
    target: Literal["all", "dense", "spdy", "sdd", "chex", "profile"] = "all",
    params_file: str = "params.yaml",
    overrides: list[str] | None = None,
) -> list[dict[str, Any]]:
    params = worker_params(params_file, overrides, target)
    return with_runner(FLOWS[target], from_dict(params))(params)
