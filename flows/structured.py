"""Latency-constrained structured profiles: measure each channel group's thinned layers, build
the refit database, search widths under a measured-latency budget, realize and fine-tune; then
compare the searched profile with uniform, FLOPs- and MACs-budgeted ones at equal measured
latency."""

from __future__ import annotations

from typing import Any

from prefect import flow

from pruneflow import config
from pruneflow.steps.structured_compare import compare_items
from tasks.common import map_items, run_task
from tasks.steps import TASKS

STEPS = (
    "prepare",
    "structured_dense",
    "structured_profile",
    "structured_recondb",
    "structured_search",
    "structured_realize",
    "structured_export",
    "structured_compare_profiles",
)


@flow(name="structured", description="SPDY's search over channel widths, realized physically")
def structured(params: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for model in params["structured"]["models"]:
        scope = f"structured:{model}"
        done: list[dict[str, Any]] = []
        for name in STEPS:
            done.append(run_task(TASKS[name], params, done, scope=scope))
        items = compare_items(config.scoped(config.from_dict(params), scope))
        done += map_items(TASKS["structured_compare"], params, items, done, scope)
        done.append(run_task(TASKS["structured_compare_report"], params, done, scope=scope))
        records += done
    return records
