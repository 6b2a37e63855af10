"""One pruning round: score, cut, pick the retraining start point, retrain under the masks.

Retraining modes (where level L's training starts, always with level L's masks applied):
  ``finetune``  the pruned weights of level L-1 (training continues from them; the optimizer and
                the learning-rate schedule start afresh, so this is fine-tuning with a full
                schedule, as in learning-rate rewinding)
  ``rewind``    the dense run's weights after ``sdd.rewind_epoch`` epochs (lottery tickets;
                epoch 0 is the original initialisation)
  ``reinit``    freshly drawn random weights (a new seed per level), same architecture, under
                the rewind chain's level-L masks (He et al.'s re-initialisation: the lottery
                ticket's mask with new weights)
Every mode then trains ``sdd.retrain.epochs`` epochs on the noisy training labels. The masks of
level L are computed on the *trained* weights of its chain's level L-1 (finetune, rewind);
reinit takes rewind's, so rewind and reinit differ only in where retraining starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
import torch
from torch import nn

from pruneflow.config import TrainParams
from pruneflow.data import ImageData
from pruneflow.errors import PruneflowError
from pruneflow.sparsity.masks import MaskEnforcer, Masks, apply, scores, select, weights
from pruneflow.train import History, seeded_build, train

Mode = Literal["finetune", "rewind", "reinit"]
StateDict = dict[str, torch.Tensor]

_PURPOSES = {"train": 1, "scores": 2, "init": 3, "batches": 4}


def derive_seed(seed: int, level: int, purpose: str) -> int:
    """A seed for one random choice of one level of one sweep seed (independent streams)."""
    if purpose not in _PURPOSES:
        raise PruneflowError(f"unknown seed purpose {purpose!r}")
    state = np.random.SeedSequence([int(seed), int(level), _PURPOSES[purpose]])
    return int(state.generate_state(1)[0] & 0x7FFFFFFF)


def clone_state(model: nn.Module) -> StateDict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def full_masks(model: nn.Module, layers: Iterable[str]) -> Masks:
    """All-True masks (the dense model, level 0)."""
    return {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights(model, layers).items()}


def prune(
    model: nn.Module,
    masks: Masks,
    method: str,
    sparsity: float,
    scope: Literal["global", "layerwise"] = "global",
    seed: int = 0,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Masks:
    """Masks at ``sparsity``, removing only weights ``masks`` still keeps (scores of ``model``)."""
    layer_scores = scores(method, model, list(masks), seed=seed, batches=batches)  # type: ignore[arg-type]
    return select(layer_scores, sparsity, scope, current=masks)


def start_state(
    mode: str, trained: StateDict, rewind: StateDict | None, fresh: StateDict | None
) -> StateDict:
    """Where retraining starts, before masking: see the module docstring."""
    if mode == "finetune":
        chosen = trained
    elif mode == "rewind":
        chosen = rewind
    elif mode == "reinit":
        chosen = fresh
    else:
        raise PruneflowError(f"unknown retrain mode '{mode}'; choose finetune, rewind or reinit")
    if chosen is None:
        raise PruneflowError(f"retrain mode '{mode}' needs its start weights")
    return {k: v.clone() for k, v in chosen.items()}


def fresh_state(
    name: str, num_classes: int, in_shape: tuple[int, int, int], seed: int
) -> StateDict:
    """A newly initialised model's state dict (``reinit``): the architecture's own init."""
    return seeded_build(name, num_classes, in_shape, seed).state_dict()


def masked_weights_are_zero(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> bool:
    return all(not bool(w.detach()[~masks[n]].any()) for n, w in weights(model, masks).items())


def retrain(
    model: nn.Module,
    masks: Masks,
    data: ImageData,
    indices: np.ndarray,
    labels: np.ndarray,
    cfg: TrainParams,
    progress: bool = False,
    description: str = "retrain",
) -> History:
    """Train ``model`` in place with ``masks`` held: pruned weights stay exactly zero."""
    enforcer = MaskEnforcer(model, masks)
    try:
        history = train(
            model, data, indices, labels, cfg, progress, enforcer.after_step, description
        )
    finally:
        enforcer.remove()
    if not masked_weights_are_zero(model, masks):  # MaskEnforcer's contract; cheap to check
        raise RuntimeError("pruned weights moved during retraining")
    return history


def train_with_rewind_point(
    model: nn.Module,
    data: ImageData,
    indices: np.ndarray,
    labels: np.ndarray,
    cfg: TrainParams,
    rewind_epoch: int,
    progress: bool = False,
    description: str = "dense",
) -> tuple[History, StateDict, StateDict]:
    """Dense training that also returns the initial weights and those after ``rewind_epoch``.

    The snapshot is taken inside the one training run (after the last optimizer step of epoch
    ``rewind_epoch``), so the learning-rate schedule is the full run's, not a k-epoch run's.
    """
    if not 0 <= rewind_epoch <= cfg.epochs:
        raise PruneflowError(
            f"rewind epoch {rewind_epoch} lies outside dense training (0..{cfg.epochs} epochs)"
        )
    init = clone_state(model)
    steps_per_epoch = math.ceil(len(indices) / cfg.batch_size)
    target = rewind_epoch * steps_per_epoch
    taken: dict[str, StateDict] = {}
    count = 0

    def after_step(m: nn.Module) -> None:
        nonlocal count
        count += 1
        if count == target:
            taken["rewind"] = clone_state(m)

    history = train(model, data, indices, labels, cfg, progress, after_step, description)
    rewind = init if rewind_epoch == 0 else taken["rewind"]
    return history, init, {k: v.clone() for k, v in rewind.items()}


def apply_start(model: nn.Module, state: StateDict, masks: Masks) -> StateDict:
    """Load ``state`` into ``model``, zero the pruned weights; returns the start point."""
    model.load_state_dict(state)
    apply(model, masks)
    return clone_state(model)
