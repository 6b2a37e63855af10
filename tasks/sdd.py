"""How the sparse double descent flow runs its levels: chains side by side, levels in order."""

from __future__ import annotations

from typing import Any

from prefect.futures import as_completed

from pruneflow import config
from pruneflow.steps.base import Record
from pruneflow.steps.sdd import chains, dense_items
from tasks.common import feeding, finish_state, step_cached
from tasks.runner import sharing_threads
from tasks.steps import TASKS


def dense_seeds(params: dict[str, Any], scope: str) -> list[dict[str, Any]]:
    return dense_items(config.scoped(config.from_dict(params), scope))


def run_chains(params: dict[str, Any], scope: str, upstream: list[Record]) -> list[Record]:
    """Every (seed, method, mode) chain of levels: levels in order within a chain (each needs
    the previous level's checkpoint), the chains concurrently on the flow's task runner.

    A chain's next level is submitted only once its previous level has finished, so no
    task-runner worker ever sits blocked on an unfinished predecessor: with N workers, N chains
    run side by side. (Submitting whole chains up front makes every queued level take a worker
    to wait in; on a bounded pool the first chain's levels then fill the workers and the chains
    run one after the other.) When a level fails its chain stops there, the other chains run
    to their end, and the first failure is raised: a rerun resumes every chain where it stopped.
    Records come back in chain order, levels in order.
    """
    sdd_level = TASKS["sdd_level"]
    all_chains = chains(config.scoped(config.from_dict(params), scope))
    heads: dict[Any, tuple[int, int]] = {}  # running level -> (chain, position in the chain)

    records: dict[tuple[int, int], Record] = {}
    shared = sharing_threads(params, sum(1 for chain in all_chains if chain))

    def submit(c: int, i: int, previous: Any = None) -> None:
        # levels the step cache already holds are not scheduled (tasks.common.step_cached)
        while i < len(all_chains[c]):
            cached = step_cached(sdd_level, params, scope, all_chains[c][i])
            if cached is None:
                break
            records[c, i], previous = cached, None
            i += 1
        if i == len(all_chains[c]):
            return
        item = all_chains[c][i]
        after = feeding(sdd_level, params, scope, item, upstream)
        after = [*after, previous] if previous is not None else after
        heads[sdd_level.submit(shared, scope, item, upstream=after)] = (c, i)

    for c, chain in enumerate(all_chains):
        if chain:
            submit(c, 0)
    failure: BaseException | None = None
    while heads:
        future = next(as_completed(list(heads)))
        c, i = heads.pop(future)
        future.wait()
        try:
            records[c, i] = finish_state(sdd_level, future.state, params, scope, all_chains[c][i])
        except Exception as exc:  # this chain stops; the others go on
            failure = failure or exc
            continue
        if i + 1 < len(all_chains[c]):
            submit(c, i + 1, future)
    if failure is not None:
        raise failure
    return [records[c, i] for c, chain in enumerate(all_chains) for i in range(len(chain))]
