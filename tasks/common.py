"""The one way a pipeline step becomes a Prefect task.

Cache key: the step's fingerprint (its params keys' values, the content hashes of its input
files and of its code), except when that fingerprint's outputs on disk no longer match what it
produced: an output deleted or edited by hand gives no key, so the task runs (and the step
restores or recomputes the file) instead of returning a stale record. Results are the steps'
small JSON records, persisted under ``.pruneflow/prefect/results`` so a second process finds
them: a flow that failed at its third task resumes there, with the first two ``Cached``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.context import TaskRunContext
from prefect.states import State

from pruneflow import config
from pruneflow.errors import PruneflowError
from pruneflow.steps import Record, Step
from pruneflow.steps.base import say, state_dir


class _QuietUserErrors(logging.Filter):
    """Drop Prefect's tracebacks for PruneflowError: the CLI prints those as one clear line.

    Any other exception (a bug) keeps its full traceback in the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PruneflowError):
            return False
        return "PruneflowError" not in record.getMessage()


for _name in ("prefect.task_runs", "prefect.flow_runs"):
    logging.getLogger(_name).addFilter(_QuietUserErrors())


def _transient(task: Task, task_run: Any, state: State) -> bool:
    """Retry only what may succeed the second time: never a user error."""
    try:
        state.result()
    except PruneflowError:
        return False
    except Exception:
        return True
    return False


def _params(arguments: dict[str, Any]) -> config.Params:
    return config.from_dict(arguments["params"])


def as_task(step: Step, retries: int = 0) -> Task:
    """A Prefect task running ``step``; call it as ``task(params_dict, upstream=[records])``."""

    def cache_key(context: TaskRunContext, arguments: dict[str, Any]) -> str | None:
        return step.cache_key(_params(arguments))

    def run(params: dict[str, Any], upstream: list[Record] | None = None) -> Record:
        # upstream records are passed only so Prefect draws the dependency edges
        return step.run(config.from_dict(params))

    run.__name__ = step.name
    return task(
        run,
        name=step.name,
        description=step.description,
        cache_key_fn=cache_key,
        persist_result=True,
        result_storage=Path(state_dir() / "prefect" / "results").resolve(),
        result_serializer="json",
        retries=retries,
        retry_condition_fn=_transient,
    )


def run_task(
    prefect_task: Task, params: dict[str, Any], upstream: list[Record] | None = None
) -> Record:
    """Call a step task in a flow and return its record, marking Prefect cache hits."""
    state: State = prefect_task(params, upstream=upstream or [], return_state=True)
    record = state.result()
    if state.name == "Cached":
        say(f"  = {prefect_task.name}: cached")
        record = {**record, "status": "cached"}
    return record
