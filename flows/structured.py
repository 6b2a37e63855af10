"""Latency-constrained structured profiles: measure each channel group's thinned layers, build
the refit database, search widths under a measured-latency budget, realize and fine-tune."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.common import run_task
from tasks.steps import TASKS

STEPS = (
    "prepare",
    "structured_dense",
    "structured_profile",
    "structured_recondb",
    "structured_search",
    "structured_realize",
)


@flow(name="structured", description="SPDY's search over channel widths, realized physically")
def structured(params: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for model in params["structured"]["models"]:
        scope = f"structured:{model}"
        done: list[dict[str, Any]] = []
        for name in STEPS:
            done.append(run_task(TASKS[name], params, done, scope=scope))
        records += done
    return records
