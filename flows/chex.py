"""CHEX: explore channels while training from scratch, extract the smaller model, and compare it
with static and prune-then-fine-tune networks at equal FLOPs."""

from __future__ import annotations

from typing import Any

from prefect import flow

from pruneflow import config
from pruneflow.steps.chex import compare_items
from tasks.common import map_items, run_task
from tasks.steps import TASKS


@flow(name="chex", description="CHEX channel exploration (Hou et al., CVPR'22)")
def chex(params: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for model in params["chex"]["models"]:
        scope = f"chex:{model}"
        done: list[dict[str, Any]] = []
        for name in ("prepare", "chex_train", "chex_extract", "chex_export"):
            done.append(run_task(TASKS[name], params, done, scope=scope))
        items = compare_items(config.scoped(config.from_dict(params), scope))
        # arch_scratch items read their CHEX run's record: plain items first
        first = [i for i in items if i.get("variant") != "arch_scratch"]
        later = [i for i in items if i.get("variant") == "arch_scratch"]
        done += map_items(TASKS["chex_compare"], params, first, done, scope)
        done += map_items(TASKS["chex_compare"], params, later, done, scope) if later else []
        done.append(run_task(TASKS["chex_report"], params, done, scope=scope))
        records += done
    return records
