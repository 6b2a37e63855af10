"""The foundation flow: data -> label noise -> dense training -> evaluation."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.common import run_task
from tasks.steps import TASKS


@flow(name="dense", description="prepare data and noisy labels, train and evaluate the dense model")
def dense(params: dict[str, Any]) -> list[dict[str, Any]]:
    labels = run_task(TASKS["prepare"], params)
    return [labels, run_task(TASKS["train_dense"], params, [labels])]
