"""CHEX: explore channels while training from scratch, extract the smaller model, and compare it
with static and prune-then-fine-tune networks at equal FLOPs."""

from __future__ import annotations

from typing import Any

from prefect import flow

from pruneflow import config
from pruneflow.steps.chex import compare_items
from tasks.chex import chex_compare, chex_extract, chex_report, chex_train
from tasks.common import map_items, run_task
from tasks.data import prepare
from tasks.export import chex_export


@flow(name="chex", description="CHEX channel exploration (Hou et al., CVPR'22)")
def chex(params: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for model in params["chex"]["models"]:
        scope = f"chex:{model}"
        labels = run_task(prepare, params, scope=scope)
        trained = run_task(chex_train, params, [labels], scope=scope)
        extracted = run_task(chex_extract, params, [trained], scope=scope)
        exported = run_task(chex_export, params, [extracted], scope=scope)
        items = compare_items(config.scoped(config.from_dict(params), scope))
        # arch_scratch items read their CHEX run's record: plain items first
        first = [i for i in items if i.get("variant") != "arch_scratch"]
        later = [i for i in items if i.get("variant") == "arch_scratch"]
        runs = map_items(chex_compare, params, first, [labels], scope)
        runs += map_items(chex_compare, params, later, runs, scope) if later else []
        report = run_task(chex_report, params, runs, scope=scope)
        records += [labels, trained, extracted, exported, *runs, report]
    return records
