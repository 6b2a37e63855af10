"""Gradual magnitude pruning (Zhu & Gupta, 2017) to a per-layer sparsity profile.

Each layer l goes from ``initial`` sparsity to its own final sparsity s_l along the cubic

    s_l(t) = s_l + (initial - s_l) * (1 - (t - t0) / (t1 - t0))^3,   t0 <= t <= t1

in optimizer steps, with masks recomputed by magnitude every ``every`` steps and at t1 exactly
(so each layer ends at exactly ``round(s_l * numel)`` zeros). After t1 the masks are fixed and
training goes on (fine-tuning) to the end of the schedule. Pruned weights are zero at once and
their optimizer state is cleared (:class:`~pruneflow.sparsity.masks.MaskEnforcer`), so momentum
never brings one back. Weights that are already zero have the least magnitude, so a layer's
masks are nested: once pruned, a weight stays pruned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pruneflow.config import TrainParams
from pruneflow.data import ImageData
from pruneflow.errors import PruneflowError
from pruneflow.sparsity import masks as M
from pruneflow.train import History, make_optimizer, train


@dataclass(frozen=True)
class GmpSchedule:
    """When to prune, in epochs of the training run (``end_epoch <= epochs``). Epochs may be
    fractional, as in SparseML's recipes: an epoch boundary is ``round(epoch * steps_per_epoch)``
    optimizer steps into the run."""

    start_epoch: float
    end_epoch: float
    every_steps: int
    initial_sparsity: float = 0.0

    def steps(self, steps_per_epoch: int) -> tuple[int, int]:
        """The pruning window's first and last optimizer step."""
        return epoch_step(self.start_epoch, steps_per_epoch), epoch_step(
            self.end_epoch, steps_per_epoch
        )


def epoch_step(epoch: float, steps_per_epoch: int) -> int:
    """Optimizer steps from the start of a run to ``epoch`` (fractional epochs round)."""
    return int(math.floor(epoch * steps_per_epoch + 0.5))


def cubic_sparsity(step: int, initial: float, final: float, start: int, end: int) -> float:
    """Zhu & Gupta's cubic schedule; ``initial`` before ``start``, ``final`` from ``end`` on."""
    if step <= start:
        return initial
    if step >= end:
        return final
    frac = (step - start) / (end - start)
    return final + (initial - final) * (1.0 - frac) ** 3


def check_schedule(schedule: GmpSchedule, epochs: float, targets: Mapping[str, float]) -> None:
    if not 0 <= schedule.start_epoch < schedule.end_epoch:
        raise PruneflowError(
            f"gmp: start_epoch ({schedule.start_epoch}) must be >= 0 and below end_epoch "
            f"({schedule.end_epoch})"
        )
    if schedule.end_epoch > epochs:
        raise PruneflowError(
            f"gmp: end_epoch {schedule.end_epoch} is past the training length ({epochs} epochs)"
        )
    if schedule.every_steps < 1:
        raise PruneflowError(f"gmp: every_steps must be >= 1, got {schedule.every_steps}")
    if not 0.0 <= schedule.initial_sparsity < 1.0:
        raise PruneflowError(
            f"gmp: initial_sparsity must be in [0, 1), got {schedule.initial_sparsity}"
        )
    for layer, s in targets.items():
        if not 0.0 <= s < 1.0:
            raise PruneflowError(f"gmp: target sparsity of '{layer}' must be in [0, 1), got {s}")


class _Pruner:
    """The training loop's after-step hook: recompute masks on schedule."""

    def __init__(self, model, targets, schedule, steps_per_epoch, optimizer):
        self.model, self.targets, self.schedule = model, dict(targets), schedule
        self.start, self.end = schedule.steps(steps_per_epoch)
        self.step = 0
        initial = {n: min(schedule.initial_sparsity, s) for n, s in self.targets.items()}
        self.enforcer = M.MaskEnforcer(model, self._masks(initial), optimizer)

    def _masks(self, sparsities: Mapping[str, float]) -> M.Masks:
        current = M.magnitude_scores(self.model, sparsities)
        return {n: M.select({n: current[n]}, sparsities[n], "layerwise")[n] for n in sparsities}

    def __call__(self, model: nn.Module) -> None:
        self.step += 1
        t = self.step
        if self.start <= t <= self.end and (
            (t - self.start) % self.schedule.every_steps == 0 or t == self.end
        ):
            levels = {
                n: cubic_sparsity(
                    t, min(self.schedule.initial_sparsity, s), s, self.start, self.end
                )
                for n, s in self.targets.items()
            }
            self.enforcer.update(self._masks(levels))
        else:
            self.enforcer.after_step(model)


def gradual_prune(
    model: nn.Module,
    data: ImageData,
    indices: np.ndarray,
    labels: np.ndarray,
    targets: Mapping[str, float],
    cfg: TrainParams,
    schedule: GmpSchedule,
    progress: bool = False,
    epochs: float | None = None,
) -> tuple[M.Masks, History]:
    """Train ``model`` for ``epochs`` (default ``cfg.epochs``; fractional allowed) while pruning
    each layer to ``targets[layer]``, with ``cfg``'s optimizer and learning-rate schedule (over
    the run's whole epochs, started or not).

    Returns the final masks (exactly ``round(s * numel)`` pruned per layer) and the history.
    """
    epochs = float(cfg.epochs if epochs is None else epochs)
    check_schedule(schedule, epochs, targets)
    steps_per_epoch = math.ceil(len(indices) / cfg.batch_size)
    start, end = schedule.steps(steps_per_epoch)
    window = end - start
    if schedule.every_steps >= window:
        # the masks would jump to their final sparsity at once: one-shot pruning, not gradual
        raise PruneflowError(
            f"gmp: every_steps ({schedule.every_steps}) must be below the pruning window of "
            f"{window} optimizer steps (epochs {schedule.start_epoch}-{schedule.end_epoch} of "
            f"{steps_per_epoch} steps each), or the masks jump to their final sparsity at once"
        )
    cfg = cfg.model_copy(update={"epochs": max(1, math.ceil(epochs))})
    optimizer = make_optimizer(model, cfg)
    pruner = _Pruner(model, targets, schedule, steps_per_epoch, optimizer)
    history = train(
        model,
        data,
        indices,
        labels,
        cfg,
        progress,
        after_step=pruner,
        description="gradual pruning",
        optimizer=optimizer,
        max_steps=epoch_step(epochs, steps_per_epoch),
    )
    pruner.enforcer.remove()
    final = {n: m.clone() for n, m in pruner.enforcer.masks.items()}
    with torch.no_grad():
        M.apply(model, final)
    return final, history
