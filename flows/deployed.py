"""The entrypoint of every deployment in pipelines.yaml: one flow, the method a parameter.

Deployment parameters are what a user would type: a params file (relative to the worker's
checkout) and ``--set``-style overrides. They are loaded and validated on the worker, against
its own checkout and data, then the method's flow runs as a subflow on the task runner the
params ask for (``orchestration.runner``).
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from pruneflow.config import from_dict
from pruneflow.deploy import FLOW_NAME, FLOWS, load_flow
from pruneflow.worker import worker_params
from tasks.runner import with_runner

Target = Literal[tuple(FLOWS)]  # type: ignore[valid-type]


@flow(name=FLOW_NAME, description="a pruneflow flow, params loaded on the worker")
def deployed(
    target: Target = "all",
    params_file: str = "params.yaml",
    overrides: list[str] | None = None,
) -> list[dict[str, Any]]:
    params = worker_params(params_file, overrides, target)
    return with_runner(load_flow(target), from_dict(params))(params)
