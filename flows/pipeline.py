"""Everything pruneflow runs by default (``pruneflow run``): every method, then the report.

The methods run one after the other: each is compute-bound on the same cores, so running them
side by side would only interleave them. Their fan-outs (database layers, gradual-pruning runs,
sweep levels, CHEX runs) spread over the task runner of ``orchestration.runner``, which each
method's subflow is given explicitly (a subflow does not inherit its parent's runner).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.chex import chex
from flows.double_descent import double_descent
from flows.spdy import spdy
from pruneflow import config
from tasks.common import run_task
from tasks.runner import with_runner
from tasks.steps import TASKS


@flow(name="pruneflow", description="SPDY, sparse double descent and CHEX, then the report")
def pipeline(params: dict[str, Any]) -> list[dict[str, Any]]:
    validated = config.from_dict(params)
    records = []
    for method in (spdy, double_descent, chex):
        records += with_runner(method, validated)(params)
    return [*records, run_task(TASKS["report"], params, records)]
