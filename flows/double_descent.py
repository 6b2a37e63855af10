"""Sparse double descent: per model, noisy labels -> dense training -> pruning sweeps -> phases."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.common import map_items, run_task
from tasks.data import prepare
from tasks.sdd import dense_seeds, run_chains, sdd_dense, sdd_plots, sdd_sweep


@flow(name="double_descent", description="sparse double descent sweeps (He et al., ICML'22)")
def double_descent(params: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for model in params["sdd"]["models"]:
        scope = f"sdd:{model}"
        labels = run_task(prepare, params, scope=scope)
        dense = map_items(sdd_dense, params, dense_seeds(params, scope), [labels], scope)
        levels = run_chains(params, scope, [labels, *dense])
        sweep = run_task(sdd_sweep, params, levels, scope=scope)
        records += [labels, *dense, *levels, sweep, run_task(sdd_plots, params, [sweep], scope)]
    return records
