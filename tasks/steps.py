"""Every pipeline step as a Prefect task, by step name (``TASKS["prepare"]``)."""

from __future__ import annotations

from prefect import Task

from pruneflow.steps import STEPS
from tasks.common import as_task

# retried: reading data from a shared disk may hiccup
RETRIES = {"prepare": 1}

TASKS: dict[str, Task] = {
    name: as_task(step, retries=RETRIES.get(name, 0)) for name, step in STEPS.items()
}
