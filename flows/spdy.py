"""SPDY: per model, data -> dense training, and the layer-time table on this host."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.common import run_task
from tasks.data import prepare, train_dense
from tasks.spdy import profile


@flow(
    name="spdy", description="SPDY: dense models, timing tables (more steps land with later issues)"
)
def spdy(params: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for model in params["spdy"]["models"]:
        scope = f"spdy:{model}"
        labels = run_task(prepare, params, scope=scope)
        records += [
            labels,
            run_task(train_dense, params, [labels], scope=scope),
            run_task(profile, params, [labels], scope=scope),
        ]
    return records
