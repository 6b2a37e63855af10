"""SPDY's DP and sensitivity search over width levels, scored by calibration loss, and a short
fine-tuning of its best few profiles to choose among them.

Nothing here re-implements the search: the structured timing table is discretized by
:func:`pruneflow.spdy.dp.discretize` (an unreachable target names the largest reachable
speedup) and :func:`pruneflow.spdy.search.sensitivity_search` maps sensitivity vectors through
the exact DP onto profiles, one width level per channel group. A profile is scored by the
cross-entropy on calibration images of the model stitched from the structured database
(:meth:`pruneflow.structured.database.StructuredDB.stitch`).

Not in SPDY (Frantar & Alistarh, ICML 2022, keep the profile of least calibration loss after
reconstruction): the best ``finetune_top_k`` distinct profiles the search scored are each
realized and fine-tuned for the first ``finetune_steps`` steps of the fine-tuning that follows,
and the one of least validation loss after that is kept (:class:`FinetunedLoss`). The one-shot
score rates the stitched model, and a thinned model's capacity to re-learn is not in it: on
resnet_mini at 2x the search's profile scored 1.996 against uniform widths' 2.067 and was 7
points worse after three epochs of fine-tuning (docs/structured.md).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneflow.chex.groups import ChannelGroup
from pruneflow.config import SearchParams, StructuredSearchParams, TrainParams
from pruneflow.errors import PruneflowError
from pruneflow.spdy.dp import discretize
from pruneflow.spdy.scoring import bn_batch_statistics
from pruneflow.spdy.search import SearchResult, sensitivity_search
from pruneflow.structured.database import StructuredDB
from pruneflow.structured.realize import realize
from pruneflow.structured.timing import StructuredTable
from pruneflow.train import train

__all__ = [
    "ChainBudget",
    "Finetuned",
    "FinetunedLoss",
    "StructuredPlan",
    "WidthLoss",
    "budget",
    "search_widths",
    "top_profiles",
]

Levels = tuple[int, ...]


class WidthLoss:
    """``loss(levels)``: mean cross-entropy of the dense model stitched at ``levels``.

    Memoized by profile: a re-aimed search meets many of the profiles an earlier one scored,
    and the loss is a function of the profile (the same batches, the same stitched weights)."""

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
        self.memo: dict[Levels, float] = {}

    @torch.no_grad()
    def __call__(self, levels: Sequence[int]) -> float:
        key = tuple(int(v) for v in levels)
        if key in self.memo:
            return self.memo[key]
        self.model.load_state_dict(self.dense)
        self.db.stitch(self.model, self.groups, list(key))
        ctx = bn_batch_statistics(self.model) if self.bn == "train" else contextlib.nullcontext()
        with ctx:
            losses = [nn.functional.cross_entropy(self.model(x), y).item() for x, y in self.batches]
        self.memo[key] = float(np.mean(losses))
        return self.memo[key]


class FinetunedLoss:
    """``loss(levels)``: the validation cross-entropy of the profile's physically thinned model
    after the first ``steps`` optimizer steps of ``recipe`` on the train split (BatchNorm on the
    running statistics the fine-tuning left, as the fine-tuned model is evaluated).

    The thinned model, not the stitched one: fine-tuning the stitched model would grow the
    dropped channels' zeroed weights back. ``recipe`` is the comparison's fine-tuning (its lr,
    epochs and fixed seed), so these steps are the first ones every compared model takes.
    Memoized by profile (the run is seeded)."""

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[ChannelGroup],
        db: StructuredDB,
        example: torch.Tensor,
        train_split: tuple[Any, np.ndarray, np.ndarray],
        recipe: TrainParams,
        steps: int,
        batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    ):
        if steps < 1:
            raise PruneflowError(f"a short fine-tuning needs at least one step, got {steps}")
        if not batches:
            raise PruneflowError("scoring needs at least one validation batch")
        self.model = model
        self.groups = list(groups)
        self.db = db
        self.example = example
        self.data, self.train_idx, self.labels = train_split
        self.recipe = recipe
        self.steps = int(steps)
        self.batches = list(batches)
        self.memo: dict[Levels, float] = {}
        self.seconds = 0.0  # wall time spent realizing, fine-tuning and scoring

    def __call__(self, levels: Sequence[int]) -> float:
        key = tuple(int(v) for v in levels)
        if key in self.memo:
            return self.memo[key]
        start = time.perf_counter()
        thin = realize(self.model, self.groups, self.db, list(key), self.example)
        train(
            thin,
            self.data,
            self.train_idx,
            self.labels,
            self.recipe,
            description="short fine-tuning",
            max_steps=self.steps,
        )
        thin.eval()
        with torch.no_grad():
            losses = [nn.functional.cross_entropy(thin(x), y).item() for x, y in self.batches]
        self.memo[key] = float(np.mean(losses))
        self.seconds += time.perf_counter() - start
        return self.memo[key]


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
class Finetuned:
    """One profile of the short fine-tuning: its search score and its loss after it."""

    levels: Levels
    widths: Levels
    calib_loss: float
    finetuned_loss: float


@dataclass(frozen=True)
class StructuredPlan:
    """The chosen width level per group, its predicted speedup and calibration loss;
    ``finetuned``: the profiles the short fine-tuning compared (empty when it did not run)."""

    target: float
    levels: tuple[int, ...]
    widths: tuple[int, ...]
    predicted_speedup: float
    calib_loss: float
    result: SearchResult
    finetuned: tuple[Finetuned, ...] = ()


def top_profiles(
    scored: dict[Levels, float], widths: np.ndarray, k: int
) -> list[tuple[Levels, float]]:
    """The ``k`` profiles of least score with distinct widths (levels that repeat a width at
    the floor are one model), best first; ties by levels, so the choice is deterministic."""
    out: list[tuple[Levels, float]] = []
    seen: set[Levels] = set()
    for levels, score in sorted(scored.items(), key=lambda kv: (kv[1], kv[0])):
        w = tuple(int(widths[g, s]) for g, s in enumerate(levels))
        if w in seen:
            continue
        seen.add(w)
        out.append((levels, float(score)))
        if len(out) == k:
            break
    return out


def search_widths(
    table: StructuredTable,
    loss: Callable[[Sequence[int]], float],
    target: float,
    cfg: SearchParams,
    progress: bool = False,
    finetuned: Callable[[Sequence[int]], float] | None = None,
) -> StructuredPlan:
    """SPDY's search for the width profile of least calibration loss within the budget.

    With ``finetuned`` and ``cfg.finetune_top_k`` > 1 (:class:`StructuredSearchParams`), the
    search's best ``finetune_top_k`` distinct profiles (every one within the budget: the DP
    chose it) are scored by ``finetuned`` and the least is kept; ties keep the better search
    score."""
    disc = budget(table, target, cfg.buckets)
    scored: dict[Levels, float] = {}

    def evaluate(levels: Sequence[int]) -> float:
        key = tuple(int(v) for v in levels)
        scored[key] = loss(key)
        return scored[key]

    result = sensitivity_search(
        disc.times,
        disc.budget,
        evaluate,
        k=cfg.candidates,
        delta=cfg.delta,
        max_no_improvement=cfg.max_no_improvement,
        local_rule=cfg.local_rule,
        seed=cfg.seed,
        progress=progress,
    )
    levels = tuple(int(v) for v in result.best_profile)
    calib_loss = float(result.best_loss)
    compared: tuple[Finetuned, ...] = ()
    k = cfg.finetune_top_k if isinstance(cfg, StructuredSearchParams) else 0
    if finetuned is not None and k > 1:
        compared = tuple(
            Finetuned(lv, _widths(table, lv), score, float(finetuned(lv)))
            for lv, score in top_profiles(scored, table.widths, k)
        )
        best = min(compared, key=lambda f: f.finetuned_loss)  # first of equals: better score
        levels, calib_loss = best.levels, best.calib_loss
    return StructuredPlan(
        target=float(target),
        levels=levels,
        widths=_widths(table, levels),
        predicted_speedup=table.predict_speedup(levels),
        calib_loss=calib_loss,
        result=result,
        finetuned=compared,
    )


def _widths(table: StructuredTable, levels: Sequence[int]) -> Levels:
    return tuple(int(table.widths[g, s]) for g, s in enumerate(levels))
