"""SPDY: per model, data -> dense training, the layer-time table on this host, the
reconstruction database (one task per layer), the search (one task per speedup target) and the
one-shot comparison with the baselines, gradual pruning to every profile (one task per target x
profile x seed), the measured speedups, and the export of the run `export` names."""

from __future__ import annotations

from typing import Any

from prefect import flow

from pruneflow import config
from pruneflow.steps.export import spdy_run
from pruneflow.steps.recondb import layer_items_longest_first
from pruneflow.steps.spdy import target_items
from pruneflow.steps.spdy_gmp import run_items
from tasks.common import map_items, run_task
from tasks.steps import TASKS


@flow(name="spdy", description="SPDY (Frantar & Alistarh, ICML'22): timing, database, search")
def spdy(params: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for model in params["spdy"]["models"]:
        scope = f"spdy:{model}"
        scoped = config.scoped(config.from_dict(params), scope)
        done: list[dict[str, Any]] = []
        for name in ("prepare", "train_dense", "profile"):
            done.append(run_task(TASKS[name], params, done, scope=scope))
        done += map_items(
            TASKS["recondb_layer"], params, layer_items_longest_first(scoped), done, scope
        )
        done.append(run_task(TASKS["recondb"], params, done, scope=scope))
        done += map_items(TASKS["spdy_search"], params, target_items(scoped), done, scope)
        done.append(run_task(TASKS["spdy_oneshot"], params, done, scope=scope))
        done += map_items(TASKS["spdy_gmp"], params, run_items(scoped), done, scope)
        done.append(run_task(TASKS["spdy_results"], params, done, scope=scope))
        if spdy_run(scoped) in run_items(scoped):  # the run `export` names (else: not run here)
            done.append(run_task(TASKS["spdy_export"], params, done, scope=scope))
        records += done
    return records
