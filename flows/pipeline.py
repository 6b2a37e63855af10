"""Everything pruneflow runs by default (``pruneflow run``); grows as methods land."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.dense import dense


@flow(name="pruneflow", description="the full default pipeline")
def pipeline(params: dict[str, Any]) -> list[dict[str, Any]]:
    return dense(params)
