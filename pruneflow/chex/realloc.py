"""Re-allocating channel counts across layers from one global ranking of BN scales.

CHEX keeps the channels whose BatchNorm scales |gamma| rank highest over the whole network, so
layers that matter more keep more channels. Every group first keeps its own best ``minimum``
channels (no layer vanishes); the rest are taken in ranking order, each one that still fits the
budget. The budget is either a channel count (the paper's channel sparsity ``S``: keep
``(1 - S)`` of all channels) or a FLOPs ceiling, which is how CHEX meets a FLOPs-reduction
target: the ranking decides which channels, the budget how many. Under a FLOPs ceiling channels
cost different amounts, so a channel that does not fit is skipped rather than ending the walk:
stopping there left up to 3% of the FLOPs budget unused in our runs (a sub-model smaller than
the baselines it is compared with).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from pruneflow.errors import PruneflowError

Fits = Callable[[Sequence[int]], bool]


def channel_budget(total: int) -> Fits:
    """At most ``total`` channels over all groups."""
    return lambda counts: sum(counts) <= total


def allocate(
    scores: Sequence[torch.Tensor],
    active: Sequence[torch.Tensor],
    minimum: Sequence[int],
    fits: Fits,
) -> list[int]:
    """Channels to keep per group: per-group minimums, then the global ranking while it fits.

    ``scores[g]`` and ``active[g]`` (bool) are per channel of group ``g``; only active channels
    compete. ``fits(counts)`` must be monotone (adding a channel never makes it fit again), so a
    channel that does not fit is skipped and, once a group's next channel does not fit, the
    group is full.
    """
    counts: list[int] = []
    pool_scores, pool_groups = [], []
    for g, (score, alive) in enumerate(zip(scores, active, strict=True)):
        alive_idx = torch.as_tensor(alive, dtype=torch.bool).nonzero().flatten()
        order = alive_idx[torch.argsort(score[alive_idx], descending=True, stable=True)]
        floor = min(minimum[g], order.numel())
        counts.append(floor)
        pool_scores.append(score[order[floor:]])
        pool_groups.append(torch.full((order.numel() - floor,), g, dtype=torch.long))
    if not fits(counts):
        raise PruneflowError(
            f"the per-layer minimums ({sum(counts)} channels) alone exceed the budget: lower "
            "chex.min_fraction or the pruning target"
        )
    flat_scores = torch.cat(pool_scores)
    ranked = torch.cat(pool_groups)[torch.argsort(flat_scores, descending=True, stable=True)]
    full = [False] * len(counts)
    for g in ranked.tolist():
        if full[g]:
            continue
        counts[g] += 1
        if not fits(counts):
            counts[g] -= 1
            # counts only grow, so g's next channel will never be cheaper: g is done
            full[g] = True
            if all(full):
                break
    return counts


def uniform_allocation(sizes: Sequence[int], minimum: Sequence[int], fits: Fits) -> list[int]:
    """The same fraction of every group's channels (the largest that fits), then single channels
    added where the budget still allows, narrowest group first: a uniformly thinned network."""
    if not fits(list(minimum)):
        raise PruneflowError(
            f"the per-layer minimums ({sum(minimum)} channels) alone exceed the budget: lower "
            "chex.min_fraction or the pruning target"
        )

    def at(ratio: float) -> list[int]:
        return [
            max(m, min(s, math.floor(ratio * s + 1e-9)))
            for s, m in zip(sizes, minimum, strict=True)
        ]

    low, high = 0.0, 1.0
    for _ in range(40):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if fits(at(mid)) else (low, mid)
    counts = at(low)
    while True:
        for g in sorted(range(len(sizes)), key=lambda g: ((counts[g] + 1) / sizes[g], g)):
            trial = counts.copy()
            trial[g] += 1
            if trial[g] <= sizes[g] and fits(trial):
                counts = trial
                break
        else:
            return counts
