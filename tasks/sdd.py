"""Tasks of the sparse double descent sweep."""

from __future__ import annotations

from typing import Any

from pruneflow import config
from pruneflow.steps.base import Record
from pruneflow.steps.sdd import SDD_DENSE, SDD_LEVEL, SDD_PLOTS, SDD_SWEEP, chains, dense_items
from tasks.common import as_task, finish_state

sdd_dense = as_task(SDD_DENSE)
sdd_level = as_task(SDD_LEVEL)
sdd_sweep = as_task(SDD_SWEEP)
sdd_plots = as_task(SDD_PLOTS)


def dense_seeds(params: dict[str, Any], scope: str) -> list[dict[str, Any]]:
    return dense_items(config.scoped(config.from_dict(params), scope))


def run_chains(params: dict[str, Any], scope: str, upstream: list[Record]) -> list[Record]:
    """Every (seed, method, mode) chain of levels: levels in order within a chain (each needs
    the previous level's checkpoint), the chains concurrently on the flow's task runner."""
    all_chains = chains(config.scoped(config.from_dict(params), scope))
    futures = []
    for chain in all_chains:
        previous = None
        for item in chain:
            # the previous level's future as an argument makes Prefect run the levels in order
            future = sdd_level.submit(
                params, scope, item, upstream=[*upstream, previous] if previous else upstream
            )
            futures.append(future)
            previous = future
    for future in futures:
        future.wait()
    return [finish_state(sdd_level, f.state) for f in futures]
