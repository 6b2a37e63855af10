"""The one way a pipeline step becomes a Prefect task.

Cache key: the step's fingerprint (its params keys' values, the content hashes of its input
files and of its code), except when that fingerprint's outputs on disk no longer match what it
produced: an output deleted or edited by hand gives no key, so the task runs (and the step
restores or recomputes the file) instead of returning a stale record. Results are the steps'
small JSON records, persisted under ``.pruneflow/prefect/results`` so a second process finds
them: a flow that failed at its third task resumes there, with the first two ``Cached``.

After a step ran, its key tables and report are published as Prefect artifacts, and its long
loops and every fan-out update progress artifacts (``tasks/artifacts.py``).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.states import State

from pruneflow import config
from pruneflow.errors import PruneflowError
from pruneflow.steps import Record, Step
from pruneflow.steps.base import say, state_dir
from tasks.artifacts import ProgressArtifact, publish_step, slug, step_progress
from tasks.runner import sharing_threads


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


def _folder_tag() -> str:
    where = str(state_dir().resolve())
    return hashlib.blake2b(where.encode(), digest_size=6).hexdigest()


def _params(arguments: dict[str, Any]) -> config.Params:
    return config.scoped(config.from_dict(arguments["params"]), arguments.get("scope"))


def _item(arguments: dict[str, Any]) -> dict[str, Any] | None:
    return arguments.get("item")


def as_task(step: Step, retries: int = 0) -> Task:
    """A Prefect task running ``step``: ``task(params_dict, scope, item, upstream=[records])``.

    ``scope`` ("spdy:smallcnn", see :func:`pruneflow.config.scoped`) picks one method's model.
    """

    def cache_key(context: TaskRunContext, arguments: dict[str, Any]) -> str | None:
        key = step.cache_key(_params(arguments), _item(arguments))
        # the fingerprint names outputs by relative path: the same step in another project
        # folder (another state dir) has the same fingerprint, and Prefect's result storage,
        # fixed when this module is imported, may be shared with it. The folder is part of
        # the key, so a result computed there is never a cache hit here.
        return None if key is None else f"{key}-{_folder_tag()}"

    def run(
        params: dict[str, Any],
        scope: str | None = None,
        item: dict[str, Any] | None = None,
        upstream: list[Record] | None = None,
    ) -> Record:
        # upstream records are passed only so Prefect draws the dependency edges
        scoped = config.scoped(config.from_dict(params), scope)
        with step_progress(" ".join(filter(None, [step.name, scope]))):
            record = step.run(scoped, item=item)
        publish_step(step.name, record, scoped, scope)
        return record

    run.__name__ = step.name
    run.step = step  # type: ignore[attr-defined]  # what feeding() reads the step's files from
    return task(
        run,
        name=step.name,
        task_run_name=_run_name(step.name),
        description=step.description,
        cache_key_fn=cache_key,
        persist_result=True,
        result_storage=Path(state_dir() / "prefect" / "results").resolve(),
        result_serializer="json",
        retries=retries,
        retry_condition_fn=_transient,
    )


def _run_name(step: str):
    def name() -> str:
        from prefect.runtime import task_run

        args = task_run.parameters
        parts = [args.get("scope")] + [f"{k}={v}" for k, v in (args.get("item") or {}).items()]
        return " ".join([step, *[p for p in parts if p]])

    return name


def finish_state(
    prefect_task: Task,
    state: State,
    params: dict[str, Any],
    scope: str | None,
    item: dict[str, Any] | None,
) -> Record:
    """The task's record, marked ``cached`` on a Prefect cache hit, with the input files its
    step read (``input_files``: what a later run with nothing to do checks, see
    :mod:`pruneflow.run_shortcut`)."""
    record = state.result()  # raises the task's exception when it failed
    if state.name == "Cached":
        say(f"  = {prefect_task.name}{_suffix(record.get('item'))}: cached")
        record = {**record, "status": "cached"}
    step: Step | None = getattr(prefect_task.fn, "step", None)
    return record if step is None else _with_inputs(record, step, params, scope, item)


def _with_inputs(
    record: Record, step: Step, params: dict[str, Any], scope: str | None, item: dict | None
) -> Record:
    view = config.scoped(config.from_dict(params), scope)
    return {**record, "input_files": [str(p) for p in step.input_paths(view, item)]}


def step_cached(
    prefect_task: Task, params: dict[str, Any], scope: str | None, item: dict[str, Any] | None
) -> Record | None:
    """The step's record when its step cache already holds this fingerprint with its outputs
    on disk as recorded (:meth:`Step.cached`), else None.

    Such a step is not submitted to Prefect at all: a task run costs several API calls and a
    result read, for a record the step cache holds anyway. It is still recorded: in the run's
    records (status ``cached``), on stderr, and in the flow run's log.
    """
    step: Step | None = getattr(prefect_task.fn, "step", None)
    if step is None:
        return None
    record = step.cached(config.scoped(config.from_dict(params), scope), item)
    if record is None:
        return None
    label = " ".join(filter(None, [prefect_task.name, scope])) + _suffix(item)
    say(f"  = {label}: cached")
    try:
        logger = get_run_logger()
        logger.info("%s: cached (step cache %s), not scheduled", label, record["fingerprint"])
    except MissingContextError:
        pass  # called outside a flow run: nothing in Prefect to record it in
    return _with_inputs(record, step, params, scope, item)


def _suffix(item: dict[str, Any] | None) -> str:
    return "[" + ", ".join(f"{k}={v}" for k, v in item.items()) + "]" if item else ""


def _feeds(record: Record, inputs: list[str]) -> bool:
    outputs = [out["path"] for out in record.get("outputs", [])]
    return any(i == o or i.startswith(o.rstrip("/") + "/") for i in inputs for o in outputs)


def feeding(
    prefect_task: Task,
    params: dict[str, Any],
    scope: str | None,
    item: dict[str, Any] | None,
    records: list[Record],
) -> list[Record]:
    """Of ``records``, those whose outputs the task's step reads (its declared input files):
    the task's upstream edges in Prefect, derived from the files as DVC's are."""
    step: Step | None = getattr(prefect_task.fn, "step", None)
    if step is None:
        return records
    try:
        view = config.scoped(config.from_dict(params), scope)
        inputs = [str(p) for p in step.input_paths(view, item)]
    except PruneflowError:
        return records  # a bad item or params: the task itself says so, in one line
    return [r for r in records if _feeds(r, inputs)]


def run_task(
    prefect_task: Task,
    params: dict[str, Any],
    upstream: list[Record] | None = None,
    scope: str | None = None,
    item: dict[str, Any] | None = None,
) -> Record:
    """Call a step task in a flow and return its record, marking Prefect cache hits.

    ``upstream``: the records run before it; those it reads become its edges (:func:`feeding`).
    """
    cached = step_cached(prefect_task, params, scope, item)
    if cached is not None:
        return cached
    after = feeding(prefect_task, params, scope, item, upstream or [])
    state: State = prefect_task(params, scope, item, upstream=after, return_state=True)
    return finish_state(prefect_task, state, params, scope, item)


def map_items(
    prefect_task: Task,
    params: dict[str, Any],
    items: list[dict[str, Any]],
    upstream: list[Record] | None = None,
    scope: str | None = None,
) -> list[Record]:
    """Run a fan-out step's items concurrently on the flow's task runner; records in order.

    Every item is its own cached task run, so after a crash only unfinished items run again.
    """
    done = {i: step_cached(prefect_task, params, scope, item) for i, item in enumerate(items)}
    todo = [i for i in done if done[i] is None]
    shared = sharing_threads(params, len(todo))
    futures = {
        i: prefect_task.submit(
            shared,
            scope,
            items[i],
            upstream=feeding(prefect_task, params, scope, items[i], upstream or []),
        )
        for i in todo
    }
    if futures:
        name = " ".join(filter(None, [prefect_task.name, scope]))
        bar = ProgressArtifact(f"{name}: items done", key=slug(f"progress {name}"))
        states = {}
        for i, future in futures.items():
            future.wait()
            states[i] = future.state
            bar.report(len(states) + len(items) - len(futures), len(items))
        # every item finished before the first failure is raised
        for i, state in states.items():
            done[i] = finish_state(prefect_task, state, params, scope, items[i])
    return [done[i] for i in range(len(items))]
