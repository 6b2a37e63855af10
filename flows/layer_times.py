"""SPDY's layer-time tables alone, for a work pool on the hardware a model will be served on
(a table is only valid on the host that measured it)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.common import run_task
from tasks.steps import TASKS


@flow(name="profile", description="SPDY layer-time tables, measured on this worker's host")
def profile_tables(params: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for model in params["spdy"]["models"]:
        scope = f"spdy:{model}"
        labels = run_task(TASKS["prepare"], params, scope=scope)
        records += [labels, run_task(TASKS["profile"], params, [labels], scope=scope)]
    return records
