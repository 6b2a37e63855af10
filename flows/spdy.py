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
from tasks.data import prepare, train_dense
from tasks.export import spdy_export
from tasks.spdy import (
    profile,
    recondb,
    recondb_layer,
    spdy_gmp,
    spdy_oneshot,
    spdy_results,
    spdy_search,
)


@flow(name="spdy", description="SPDY (Frantar & Alistarh, ICML'22): timing, database, search")
def spdy(params: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for model in params["spdy"]["models"]:
        scope = f"spdy:{model}"
        labels = run_task(prepare, params, scope=scope)
        dense = run_task(train_dense, params, [labels], scope=scope)
        timing = run_task(profile, params, [labels], scope=scope)
        scoped = config.scoped(config.from_dict(params), scope)
        layers = map_items(
            recondb_layer, params, layer_items_longest_first(scoped), [labels, dense], scope
        )
        database = run_task(recondb, params, layers, scope=scope)
        searches = map_items(
            spdy_search, params, target_items(scoped), [dense, timing, database], scope
        )
        oneshot = run_task(spdy_oneshot, params, searches, scope=scope)
        runs = map_items(spdy_gmp, params, run_items(scoped), [oneshot], scope)
        results = run_task(spdy_results, params, [timing, *runs], scope=scope)
        records += [labels, dense, timing, *layers, database, *searches, oneshot, *runs, results]
        if spdy_run(scoped) in run_items(scoped):  # the run export names (else: not run here)
            records.append(run_task(spdy_export, params, runs, scope=scope))
    return records
