"""SPDY's DP and sensitivity search over width levels, scored by calibration loss.

Nothing here re-implements the search: the structured timing table is discretized by
:func:`pruneflow.spdy.dp.discretize` (an unreachable target names the largest reachable
speedup) and :func:`pruneflow.spdy.search.sensitivity_search` maps sensitivity vectors through
the exact DP onto profiles, one width level per channel group. A profile is scored by the
cross-entropy on calibration images of the model stitched from the structured database
(:meth:`pruneflow.structured.database.StructuredDB.stitch`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pruneflow.chex.groups import ChannelGroup
from pruneflow.config import SearchParams
from pruneflow.errors import PruneflowError
from pruneflow.spdy.dp import discretize
from pruneflow.spdy.scoring import bn_batch_statistics
from pruneflow.spdy.search import SearchResult, sensitivity_search
from pruneflow.structured.database import StructuredDB
from pruneflow.structured.timing import StructuredTable

__all__ = ["ChainBudget", "StructuredPlan", "WidthLoss", "budget", "search_widths"]


class WidthLoss:
    """``loss(levels)``: mean cross-entropy of the dense model stitched at ``levels``."""

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[ChannelGroup],
        db: StructuredDB,
        batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
        bn: str = "train",
    ):
        if bn not in ("eval", "train"):
            raise PruneflowError(f"BatchNorm scoring mode must be 'eval' or 'train', got '{bn}'")
        if not batches:
            raise PruneflowError("scoring needs at least one calibration batch")
        self.model = copy.deepcopy(model).eval()
        self.dense = copy.deepcopy(self.model.state_dict())
        self.groups = list(groups)
        self.db = db
        self.batches = list(batches)
        self.bn = bn

    @torch.no_grad()
    def __call__(self, levels: Sequence[int]) -> float:
        self.model.load_state_dict(self.dense)
        self.db.stitch(self.model, self.groups, [int(v) for v in levels])
        ctx = bn_batch_statistics(self.model) if self.bn == "train" else contextlib.nullcontext()
        with ctx:
            losses = [nn.functional.cross_entropy(self.model(x), y).item() for x, y in self.batches]
        return float(np.mean(losses))


@dataclass(frozen=True)
class ChainBudget:
    """The table's chain times in DP buckets (``times`` [groups, levels, levels]) and budget."""

    times: np.ndarray
    budget: int
    budget_ms: float
    bucket_ms: float


def budget(table: StructuredTable, target: float, buckets: int) -> ChainBudget:
    """The table in DP buckets for ``target`` (one line naming the reachable speedup if not).

    Rounded up, so that every profile the DP accepts fits the budget in real time.
    """
    if not target > 0:
        raise PruneflowError(f"target speedup must be > 0, got {target!r}")
    reach = table.max_speedup()
    if target > reach:
        raise PruneflowError(
            f"target speedup {target:g}x is unreachable for {table.meta['model']}: the fastest "
            f"width profile in its structured timing table gives at most {reach:.3g}x"
        )
    n_groups, n_levels, _ = table.times_ms.shape
    disc = discretize(
        table.times_ms.reshape(n_groups, -1),
        table.dense_total_ms,
        float(table.meta["prunable_dense_ms"]),
        target,
        buckets=buckets,
        rounding="up",
    )
    times = np.asarray(disc.times).reshape(n_groups, n_levels, n_levels)
    return ChainBudget(times, disc.budget, disc.budget_ms, disc.bucket_ms)


@dataclass(frozen=True)
class StructuredPlan:
    """The chosen width level per group, its predicted speedup and calibration loss."""

    target: float
    levels: tuple[int, ...]
    widths: tuple[int, ...]
    predicted_speedup: float
    calib_loss: float
    result: SearchResult


def search_widths(
    table: StructuredTable,
    loss: WidthLoss,
    target: float,
    cfg: SearchParams,
    progress: bool = False,
) -> StructuredPlan:
    """SPDY's search for the width profile of least calibration loss within the budget."""
    disc = budget(table, target, cfg.buckets)
    result = sensitivity_search(
        disc.times,
        disc.budget,
        loss,
        k=cfg.candidates,
        delta=cfg.delta,
        max_no_improvement=cfg.max_no_improvement,
        local_rule=cfg.local_rule,
        seed=cfg.seed,
        progress=progress,
    )
    levels = tuple(int(v) for v in result.best_profile)
    widths = tuple(int(table.widths[g, s]) for g, s in enumerate(levels))
    return StructuredPlan(
        target=float(target),
        levels=levels,
        widths=widths,
        predicted_speedup=table.predict_speedup(levels),
        calib_loss=float(result.best_loss),
        result=result,
    )
