"""One training run per method of the comparison, all on the same loop, data and recipe.

The loop is :func:`pruneflow.train.train` with the recipe's random shifts (``chex.shift``);
CHEX adds its explorer as the loop's ``on_step`` hook.

* ``dense``: the full model (the reference the FLOPs reductions are relative to).
* ``chex``: the full model trained from scratch with channel exploration, then extracted.
* ``static``: the uniformly thinned model at the target FLOPs, trained from scratch.
* ``l1_norm``: dense training for part of the epochs (``chex.compare.pretrain_fraction``),
  one-shot L1-norm filter pruning to the same uniform widths, fine-tuning for the rest.
* ``slimming``: the same, with an L1 penalty on the BN scales while pre-training
  (``chex.compare.slimming_l1``) and one global |gamma| ranking choosing the widths.

The prune-then-fine-tune methods train for the same total epochs as CHEX and ``static``
(pre-training plus fine-tuning), as the paper's comparison at equal FLOPs does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pruneflow import wallclock
from pruneflow.chex.arch import build_model
from pruneflow.chex.baselines import (
    bn_l1_penalty,
    l1_masks,
    slimming_masks,
    static_model,
    uniform_counts,
)
from pruneflow.chex.explore import ChexExplorer, ExploreSettings
from pruneflow.chex.extract import extract
from pruneflow.chex.flops import count_flops, count_params
from pruneflow.chex.groups import ChannelGroup, find_groups
from pruneflow.chex.schedule import exploration_iterations
from pruneflow.config import ChexParams, TrainParams
from pruneflow.data import ImageData
from pruneflow.errors import PruneflowError
from pruneflow.train import History, StepHook, evaluate, train

METHOD_NAMES = ("dense", "chex", "static", "l1_norm", "slimming")
PRUNE_FINETUNE = ("l1_norm", "slimming")  # pre-train, prune once, fine-tune


@dataclass(frozen=True)
class Split:
    """Indices of the splits and the labels to train on / score against (indexed like data)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    labels: np.ndarray  # possibly noisy: what training sees
    true: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Split:
        split = frame["split"].to_numpy()
        return cls(
            train=np.flatnonzero(split == "train"),
            val=np.flatnonzero(split == "val"),
            test=np.flatnonzero(split == "test"),
            labels=frame["label"].to_numpy(),
            true=frame["true_label"].to_numpy(),
        )


@dataclass
class RunResult:
    """What one (method, target, seed) run produced, JSON-able through :meth:`record`."""

    method: str
    target: float
    seed: int
    variant: str | None
    test_acc: float
    test_loss: float
    val_acc: float
    flops_dense: int
    flops: int
    params_dense: int
    params: int
    channels: dict[str, int]
    sizes: dict[str, int]
    history: dict[str, list[float]]
    exploration: list[dict[str, Any]] = field(default_factory=list)

    @property
    def flops_reduction(self) -> float:
        return 1.0 - self.flops / self.flops_dense

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "flops_reduction": self.flops_reduction}


def iterations_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, math.ceil(n_train / batch_size))


def explore_settings(
    chex: ChexParams,
    cfg: TrainParams,
    n_train: int,
    flops_reduction: float | None = None,
    sparsity: float | None = None,
) -> ExploreSettings:
    """Iteration-based settings from the epoch-based params; a target given here replaces the
    section's (the comparison runs several targets with one section)."""
    every, until = exploration_iterations(
        iterations_per_epoch(n_train, cfg.batch_size), chex.delta_t, chex.t_max, cfg.epochs
    )
    if flops_reduction is None and sparsity is None:
        flops_reduction, sparsity = chex.flops_reduction, chex.sparsity
    settings = ExploreSettings(
        delta_t=every,
        t_max=until,
        flops_reduction=flops_reduction,
        sparsity=sparsity,
        delta0=chex.delta0,
        min_fraction=chex.min_fraction,
        realloc=chex.realloc,
        seed=cfg.seed,
        include=tuple(chex.include),
        exclude=tuple(chex.exclude),
    )
    settings.check()
    return settings


def apply_variant(chex: ChexParams, variant: str | None, epochs: int) -> ChexParams:
    """The CHEX settings of an ablation: ``no_realloc`` (uniform per-group counts, CSS and
    regrowing kept), ``no_regrow`` (delta0 = 0), ``explore_25`` / ``explore_75`` (T_max at 25% /
    75% of the epochs instead of ``chex.t_max``, same Delta_T), ``mask_at_init`` (one CSS
    prune to the uniform widths at the first iteration, nothing explored: the static network
    trained as a masked one). ``arch_scratch`` is not a setting: CHEX's final architecture,
    trained from scratch like ``static`` (see :func:`run_method`)."""
    if variant in (None, "arch_scratch"):
        return chex
    if variant == "no_realloc":
        return chex.model_copy(update={"realloc": False})
    if variant == "no_regrow":
        return chex.model_copy(update={"delta0": 0.0})
    if variant in ("explore_25", "explore_75"):
        t_max = epochs * int(variant[-2:]) / 100
        return chex.model_copy(update={"t_max": t_max, "delta_t": min(chex.delta_t, t_max)})
    if variant == "mask_at_init":
        tiny = 1e-9  # rounds to the first iteration (T_max is at least one)
        return chex.model_copy(
            update={"realloc": False, "delta0": 0.0, "t_max": tiny, "delta_t": tiny}
        )
    raise PruneflowError(f"unknown CHEX variant '{variant}'")


def _history(h: History) -> dict[str, list[float]]:
    return {"loss": h.loss, "acc": h.acc, "lr": h.lr}


def fit(
    model: nn.Module,
    data: ImageData,
    split: Split,
    cfg: TrainParams,
    shift: int,
    progress: bool,
    description: str,
    on_step: StepHook | None = None,
) -> History:
    """Train ``model`` in place on the training split's (possibly noisy) labels: the shared
    loop with the recipe's random shifts of up to ``shift`` pixels."""
    return train(
        model,
        data,
        split.train,
        split.labels,
        cfg,
        progress=progress,
        description=description,
        shift=shift,
        on_step=on_step,
    )


def train_chex(
    model_name: str,
    data: ImageData,
    split: Split,
    cfg: TrainParams,
    chex: ChexParams,
    flops_reduction: float | None = None,
    progress: bool = False,
) -> tuple[nn.Module, ChexExplorer, History]:
    """Train ``model_name`` from scratch with CHEX; returns the masked model and its explorer.

    Every input is checked (settings, BN after every pruned conv, reachable budget) before the
    first training step.
    """
    settings = explore_settings(chex, cfg, split.train.size, flops_reduction)
    model = build_model(model_name, data.num_classes, data.in_shape, cfg.seed)
    example = data.images(split.train[:2])
    explorer = ChexExplorer(model, example, settings)
    history = fit(
        model, data, split, cfg, chex.shift, progress, f"chex {model_name}", explorer.after_step
    )
    return model, explorer, history


def run_method(
    method: str,
    model_name: str,
    data: ImageData,
    split: Split,
    cfg: TrainParams,
    chex: ChexParams,
    target: float,
    seed: int,
    progress: bool = False,
    variant: str | None = None,
    channels: dict[str, int] | None = None,
    pretrained: Callable[[nn.Module], object] | None = None,
) -> tuple[RunResult, nn.Module]:
    """Train one method at FLOPs reduction ``target`` with ``seed``; the result and final model.

    ``variant`` (CHEX only) runs an ablation, see :func:`apply_variant`; ``arch_scratch`` trains
    ``channels`` (the per-group counts a CHEX run chose) from scratch, as ``static`` would.
    ``pretrained`` (dense only) loads the user's trained weights into the built model in place
    of training it: the dense reference is then their model as it is.
    """
    if pretrained is not None and method != "dense":
        raise PruneflowError(f"trained weights replace the dense run only, not '{method}'")
    if method not in METHOD_NAMES:
        raise PruneflowError(f"unknown method '{method}'; choose one of {', '.join(METHOD_NAMES)}")
    if variant is not None and method != "chex":
        raise PruneflowError(f"variants are ablations of CHEX, not of '{method}'")
    if (variant == "arch_scratch") != (channels is not None):
        raise PruneflowError("arch_scratch needs the channel counts of a CHEX run, and only it")
    chex = apply_variant(chex, variant, cfg.epochs)
    cfg = cfg.model_copy(update={"seed": seed})
    example = data.images(split.train[:2])
    in_shape = tuple(data.in_shape)
    dense = build_model(model_name, data.num_classes, in_shape, seed)
    groups = find_groups(dense, example, chex.include, chex.exclude, model_name)
    sizes = {g.name: g.size for g in groups}
    flops_dense, params_dense = count_flops(dense, in_shape), count_params(dense)
    label = f"{method}{'/' + variant if variant else ''} {model_name} -{target:.0%} s{seed}"
    exploration: list[dict[str, Any]] = []
    started = time.perf_counter()
    if method == "dense" and pretrained is not None:
        model, counts = dense, dict(sizes)
        pretrained(model)
        hist = {"loss": [], "acc": [], "lr": []}
    elif method == "dense":
        model, counts = dense, dict(sizes)
        hist = _history(fit(model, data, split, cfg, chex.shift, progress, label))
    elif variant == "arch_scratch":
        counts = dict(channels or {})
        model = static_model(dense, example, counts, seed, groups)
        hist = _history(fit(model, data, split, cfg, chex.shift, progress, label))
    elif method == "chex":
        masked, explorer, h = train_chex(model_name, data, split, cfg, chex, target, progress)
        model = extract(masked, explorer.groups, explorer.state.active, example)
        counts, hist, exploration = explorer.counts(), _history(h), explorer.history
    elif method == "static":
        counts = uniform_counts(dense, example, target, chex.min_fraction, groups)
        model = static_model(dense, example, counts, seed, groups)
        hist = _history(fit(model, data, split, cfg, chex.shift, progress, label))
    else:
        model, counts, hist = _prune_finetune(
            method, dense, data, split, cfg, chex, example, target, groups, progress
        )
    wallclock.note("train", time.perf_counter() - started)  # no output carries it
    test_loss, test_acc = evaluate(model, data, split.test, split.true)
    _, val_acc = evaluate(model, data, split.val, split.true)
    result = RunResult(
        method=method,
        target=float(target),
        seed=seed,
        variant=variant,
        test_acc=test_acc,
        test_loss=test_loss,
        val_acc=val_acc,
        flops_dense=flops_dense,
        flops=count_flops(model, in_shape),
        params_dense=params_dense,
        params=count_params(model),
        channels={k: int(v) for k, v in counts.items()},
        sizes=sizes,
        history=hist,
        exploration=exploration,
    )
    return result, model


def _prune_finetune(
    method: str,
    dense: nn.Module,
    data: ImageData,
    split: Split,
    cfg: TrainParams,
    chex: ChexParams,
    example: torch.Tensor,
    target: float,
    groups: list[ChannelGroup],
    progress: bool,
) -> tuple[nn.Module, dict[str, int], dict[str, list[float]]]:
    """Pre-train ``dense``, prune it once to the FLOPs target by ``method``'s criterion,
    fine-tune: ``cfg.epochs`` in all, each phase with its own cosine schedule."""
    c = chex.compare
    if cfg.epochs < 2:
        raise PruneflowError(f"{method} needs train.epochs >= 2 (pre-train, then fine-tune)")
    pre = min(cfg.epochs - 1, max(1, round(cfg.epochs * c.pretrain_fraction)))
    pre_cfg = cfg.model_copy(update={"epochs": pre})
    ft_cfg = cfg.model_copy(update={"epochs": cfg.epochs - pre, "lr": c.finetune_lr})
    penalty = c.slimming_l1 if method == "slimming" else 0.0
    with bn_l1_penalty(dense, penalty):
        h1 = fit(dense, data, split, pre_cfg, chex.shift, progress, f"{method} pre-train")
    if method == "slimming":
        masks = slimming_masks(dense, example, target, chex.min_fraction, groups)
    else:
        counts = uniform_counts(dense, example, target, chex.min_fraction, groups)
        masks = l1_masks(dense, example, counts, groups)
    model = extract(dense, groups, masks, example)
    h2 = fit(model, data, split, ft_cfg, chex.shift, progress, f"{method} fine-tune")
    counts = {name: int(mask.sum()) for name, mask in masks.items()}
    return model, counts, {k: v + _history(h2)[k] for k, v in _history(h1).items()}
