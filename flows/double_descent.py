"""Sparse double descent: per model, noisy labels -> dense training -> pruning sweeps -> phases."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.common import map_items, run_task
from tasks.sdd import dense_seeds, run_chains
from tasks.steps import TASKS


@flow(name="double_descent", description="sparse double descent sweeps (He et al., ICML'22)")
def double_descent(params: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for model in params["sdd"]["models"]:
        scope = f"sdd:{model}"
        done = [run_task(TASKS["prepare"], params, scope=scope)]
        done += map_items(TASKS["sdd_dense"], params, dense_seeds(params, scope), done, scope)
        done += run_chains(params, scope, done)
        for name in ("sdd_sweep", "sdd_plots"):
            done.append(run_task(TASKS[name], params, done, scope=scope))
        records += done
    return records
