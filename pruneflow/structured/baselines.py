"""The profiles the search is compared with, each brought to the same measured speedup.

* ``uniform``: every group at the same width level, the widest level whose speedup the
  structured timing table predicts to reach the target; channels and refit from the
  reconstruction database (so only the allocation differs from the search's).
* ``chex_realloc``: CHEX's re-allocation (Hou et al., CVPR 2022, Sec. 3.2): the channels whose
  BatchNorm scales rank highest over the whole network, under a FLOPs ceiling
  (:func:`pruneflow.chex.realloc.allocate`); no refit.
* ``tp_magnitude``: Torch-Pruning's global pruning as its users run it (Fang et al., CVPR 2023;
  ``MetaPruner`` with ``global_pruning=True``, L2 magnitude importance, the classifier ignored),
  one shot at a channel-pruning ratio; no refit.

A FLOPs ceiling or a pruning ratio says nothing exact about latency, so each is bisected on the
*measured* speedup (plain torch, the thinned and the dense model alternating, as the realize
step measures): :func:`calibrate` returns the budget whose measured speedup lies closest to
the target. What the method itself predicts (FLOPs or MACs ratio) is kept beside it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from pruneflow.chex.flops import FlopsModel
from pruneflow.chex.groups import ChannelGroup
from pruneflow.chex.realloc import allocate
from pruneflow.errors import PruneflowError
from pruneflow.structured.timing import StructuredTable
from pruneflow.structured.widths import thin_copy

__all__ = [
    "Calibrated",
    "bn_scores",
    "calibrate",
    "chex_realloc",
    "group_widths_of",
    "minimum_widths",
    "rebuild",
    "tp_magnitude",
    "uniform_level",
]


def uniform_level(table: StructuredTable, target: float) -> int:
    """The widest width level at which every group together is predicted to reach ``target``
    (one line naming the best uniform speedup when none does)."""
    n_groups, n_levels, _ = table.times_ms.shape
    predicted = [table.dense_total_ms / table.predict_ms([s] * n_groups) for s in range(n_levels)]
    for level, speedup in enumerate(predicted):
        if speedup >= target:
            return level
    raise PruneflowError(
        f"target speedup {target:g}x is unreachable with uniform widths for "
        f"{table.meta['model']}: the narrowest uniform level gives {max(predicted):.3g}x"
    )


def bn_scores(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """Mean |gamma| per channel over the group's BatchNorms (CHEX's ranking score)."""
    modules = dict(model.named_modules())
    total = torch.zeros(group.size, dtype=torch.float64)
    for s in group.slices:
        if s.module in group.bns and s.attr == "weight":
            gamma = modules[s.module].weight.detach().abs().double()
            total.index_add_(0, s.root, gamma.index_select(0, s.idx))
    return total / max(len(group.bns), 1)


def chex_realloc(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    flops: FlopsModel,
    fraction: float,
    min_fraction: float,
    min_channels: int = 1,
) -> dict[str, torch.Tensor]:
    """Per group, the channels CHEX keeps at ``fraction`` of the dense FLOPs (bool masks).

    Every group keeps at least ``max(ceil(min_fraction * size), min_channels)`` channels (its
    best by BN scale), the floor every other profile of the comparison obeys.
    """
    scores = [bn_scores(model, g) for g in groups]
    active = [torch.ones(g.size, dtype=torch.bool) for g in groups]
    minimum = minimum_widths(groups, min_fraction, min_channels)
    counts = allocate(scores, active, minimum, flops.fits(fraction * flops.dense()))
    masks = {}
    for g, score, k in zip(groups, scores, counts, strict=True):
        keep = torch.argsort(score, descending=True, stable=True)[:k]
        mask = torch.zeros(g.size, dtype=torch.bool)
        mask[keep] = True
        masks[g.name] = mask
    return masks


def minimum_widths(
    groups: Sequence[ChannelGroup], min_fraction: float, min_channels: int
) -> list[int]:
    """The fewest channels each group may keep: ``ceil(min_fraction * size)``, at least
    ``min_channels``, at most the group's size."""
    return [min(g.size, max(min_channels, math.ceil(min_fraction * g.size))) for g in groups]


def tp_magnitude(
    model: nn.Module, example: torch.Tensor, ratio: float, max_ratio: float
) -> nn.Module:
    """A copy of ``model`` pruned by Torch-Pruning's global magnitude pruning at ``ratio``.

    Only conv channels compete: every Linear layer is ignored (its outputs are the classifier's
    or a hidden layer's, which the structured groups leave whole), so the result has the same
    kind of architecture as every other profile here.
    """
    sub = copy.deepcopy(model).eval()
    ignored = [m for m in sub.modules() if isinstance(m, nn.Linear)]
    pruner = tp.pruner.MetaPruner(
        sub,
        example,
        importance=tp.importance.MagnitudeImportance(p=2),
        global_pruning=True,
        pruning_ratio=ratio,
        max_pruning_ratio=max_ratio,
        iterative_steps=1,
        ignored_layers=ignored,
    )
    pruner.step()
    return sub.eval()


def group_widths_of(model: nn.Module, groups: Sequence[ChannelGroup]) -> list[int]:
    """Each group's channel count in a thinned copy of the model the groups were found in
    (module names unchanged): its root conv's output channels."""
    modules = dict(model.named_modules())
    return [int(modules[g.root].weight.shape[0]) for g in groups]


def rebuild(dense: nn.Module, groups: Sequence[ChannelGroup], widths: Sequence[int]) -> nn.Module:
    """A module with the architecture of a profile of ``widths`` (weights to be loaded)."""
    keep = {g.name: torch.arange(int(w)) for g, w in zip(groups, widths, strict=True)}
    return thin_copy(dense, groups, keep).eval()


@dataclass(frozen=True)
class Calibrated:
    """The budget chosen, its model and measured speedup, and every budget tried."""

    budget: float
    model: nn.Module
    measured_speedup: float
    tried: list[tuple[float, float]]  # (budget, measured speedup)


def calibrate(
    build: Callable[[float], nn.Module],
    speedup: Callable[[nn.Module], float],
    target: float,
    low: float,
    high: float,
    steps: int,
    increasing: bool,
    progress: Callable[[int, int], None] | None = None,
    floor: float = 0.0,
) -> Calibrated:
    """Bisect a budget in ``[low, high]`` until the model ``build(budget)`` measures ``target``.

    ``increasing``: whether a larger budget prunes more (a pruning ratio) or less (a FLOPs
    fraction). Returns, of the budgets tried that measured at least ``floor x target``, the one
    measured closest to the target; if none did, the fastest (closest to the target alone let a
    model 6% short of it beat one 8% past it, and the comparison promises the target).
    """
    if not low < high:
        raise PruneflowError(f"calibration needs low < high, got [{low}, {high}]")
    tried: list[tuple[float, float, nn.Module]] = []
    lo, hi = low, high
    for i in range(steps):
        mid = 0.5 * (lo + hi)
        model = build(mid)
        got = speedup(model)
        tried.append((mid, got, model))
        too_fast = got > target
        # a faster model than asked: prune less
        if too_fast == increasing:
            hi = mid
        else:
            lo = mid
        if progress is not None:
            progress(i + 1, steps)
    speeds = np.array([s for _, s, _ in tried])
    meeting = np.flatnonzero(speeds >= floor * target)
    if meeting.size:
        best = int(meeting[np.argmin(np.abs(speeds[meeting] - target))])
    else:
        best = int(np.argmax(speeds))
    budget, got, model = tried[best]
    return Calibrated(budget, model, got, [(b, s) for b, s, _ in tried])
