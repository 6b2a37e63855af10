"""CHEX's channel exploration as a training-loop hook (Algorithm 1 of the paper).

Training starts from the full, randomly initialised model. After every optimizer step the hook
holds masked channels in place; every ``Delta_T`` iterations up to ``T_max`` it

1. re-allocates the channel count of every group from the global ranking of BN |gamma|
   (budget: a channel sparsity ``S`` or a FLOPs ceiling; per-group minimums),
2. prunes every group to its count by column subset selection (leverage scores),
3. regrows ``delta_t x C`` of each group's pruned channels (``C`` the group's full channel
   count; ``delta_t`` cosine-decaying), sampled by orthogonal-projection error, restoring their
   most recently used weights.

The last step regrows nothing, so from ``T_max`` on the sub-model is fixed and meets the budget;
training simply continues with the masks in place. Every step is recorded (:attr:`history`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pruneflow.chex.css import css_select, gram_matrix
from pruneflow.chex.flops import FlopsModel
from pruneflow.chex.groups import find_groups
from pruneflow.chex.masks import MaskState
from pruneflow.chex.realloc import allocate, channel_budget, uniform_allocation
from pruneflow.chex.regrow import projection_errors, sample_regrow
from pruneflow.chex.schedule import regrow_fraction
from pruneflow.errors import PruneflowError


@dataclass(frozen=True)
class ExploreSettings:
    """CHEX's knobs in iterations. Exactly one target: ``flops_reduction`` or ``sparsity``."""

    delta_t: int  # iterations between prune/regrow steps
    t_max: int  # iteration of the last prune/regrow step (at most)
    flops_reduction: float | None = None  # extracted FLOPs = (1 - this) * dense FLOPs
    sparsity: float | None = None  # channel sparsity S: keep (1 - S) of all channels
    delta0: float = 0.3  # initial regrowing fraction
    min_fraction: float = 0.1  # every group keeps at least this share of its channels (>= 1)
    realloc: bool = True  # False: uniform per-group counts (an ablation)
    seed: int = 0
    include: tuple[str, ...] = ()  # conv patterns: the groups explored (empty: all)
    exclude: tuple[str, ...] = ()  # conv patterns: groups left whole

    def check(self) -> None:
        """Raise :class:`PruneflowError` for settings that cannot run (before any training)."""
        if (self.flops_reduction is None) == (self.sparsity is None):
            raise PruneflowError(
                "CHEX needs exactly one target: chex.flops_reduction or chex.sparsity "
                "(set the other to null)"
            )
        if self.sparsity is not None and not 0.0 <= self.sparsity < 1.0:
            raise PruneflowError(
                f"chex.sparsity = {self.sparsity}: the target channel sparsity must be in [0, 1)"
            )
        if self.flops_reduction is not None and not 0.0 <= self.flops_reduction < 1.0:
            raise PruneflowError(
                f"chex.flops_reduction = {self.flops_reduction}: must be in [0, 1)"
            )
        if self.delta_t < 1 or self.t_max < 1:
            raise PruneflowError(
                f"Delta_T ({self.delta_t}) and T_max ({self.t_max}) must be >= 1 iteration"
            )
        if self.delta_t > self.t_max:
            raise PruneflowError(
                f"Delta_T ({self.delta_t} iterations) is larger than T_max ({self.t_max}): "
                "there would be no prune/regrow step; make chex.delta_t <= chex.t_max"
            )
        if not 0.0 <= self.delta0 <= 1.0:
            raise PruneflowError(f"chex.delta0 = {self.delta0}: must be in [0, 1]")
        if not 0.0 < self.min_fraction <= 1.0:
            raise PruneflowError(f"chex.min_fraction = {self.min_fraction}: must be in (0, 1]")


def regrow_count(delta: float, size: int, pruned: int) -> int:
    """Channels to regrow in a group of ``size`` channels with ``pruned`` of them pruned.

    ``delta`` is a fraction of the layer's full width, not of its pruned channels: the paper's
    sub-model keeps ``C (1 - S)`` channels and grows to ``C (1 - S + delta_t)`` (Hou et al.,
    CVPR 2022, Sec. 3, channel regrowing, and Algorithm 1; the authors' code regrows
    ``delta_t x C``). Capped at the channels there are to regrow.
    """
    return min(pruned, round(delta * size))


class ChexExplorer:
    """Masks, allocation and the prune/regrow schedule of one model; call :meth:`after_step`
    after every optimizer step."""

    def __init__(self, model: nn.Module, example: torch.Tensor, settings: ExploreSettings):
        settings.check()
        self.settings = settings
        self.model = model
        self.example = example
        self.groups = find_groups(model, example, settings.include, settings.exclude)
        self.state = MaskState(model, self.groups)
        self.flops_model = FlopsModel(model, tuple(example.shape[1:]), self.groups)
        self.dense_flops = self.flops_model.dense()
        self.minimum = [
            min(g.size, max(1, math.ceil(settings.min_fraction * g.size))) for g in self.groups
        ]
        if settings.flops_reduction is not None:
            self.budget = (1.0 - settings.flops_reduction) * self.dense_flops
            self.fits = self.flops_model.fits(self.budget)
        else:
            total = sum(g.size for g in self.groups)
            self.budget = round((1.0 - settings.sparsity) * total)
            self.fits = channel_budget(self.budget)
        # uniform counts double as the feasibility check of the minimums (before training)
        self.uniform = uniform_allocation([g.size for g in self.groups], self.minimum, self.fits)
        self.n_steps = settings.t_max // settings.delta_t
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.history: list[dict] = []
        # channels regrown at the previous step: does the next CSS selection keep them?
        self._regrown = {g.name: torch.zeros(g.size, dtype=torch.bool) for g in self.groups}

    def after_step(self, iteration: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Hold masked channels; at every ``Delta_T``-th iteration up to ``T_max``, explore."""
        self.state.hold(optimizer)
        s = self.settings
        if iteration % s.delta_t == 0 and iteration <= s.t_max:
            self.explore(iteration // s.delta_t, iteration, optimizer)

    @torch.no_grad()
    def explore(
        self, step: int, iteration: int = 0, optimizer: torch.optim.Optimizer | None = None
    ) -> None:
        """Prune/regrow step ``step`` (1 .. ``n_steps``): re-allocate, CSS-prune, regrow."""
        active = [self.state.active[g.name] for g in self.groups]
        if self.settings.realloc:
            scores = [self.state.bn_scores(g) for g in self.groups]
            counts = allocate(scores, active, self.minimum, self.fits)
        else:
            counts = [min(c, int(a.sum())) for c, a in zip(self.uniform, active, strict=True)]
        delta = regrow_fraction(step, self.n_steps, self.settings.delta0)
        masks = {}
        for g, k, alive in zip(self.groups, counts, active, strict=True):
            matrix = self.state.channel_matrix(g)
            gram = gram_matrix(matrix)
            kept = css_select(matrix, k, alive, gram)
            pruned_mask = torch.ones(g.size, dtype=torch.bool)
            pruned_mask[kept] = False
            pruned = pruned_mask.nonzero().flatten()
            n_regrow = regrow_count(delta, g.size, pruned.numel())
            grown = pruned[:0]
            if n_regrow > 0:
                errors = projection_errors(matrix, kept, pruned, gram)
                grown = pruned[sample_regrow(errors, n_regrow, self.generator)]
            mask = torch.zeros(g.size, dtype=torch.bool)
            mask[kept] = True
            mask[grown] = True
            masks[g.name] = mask
            kept_regrown = int(self._regrown[g.name][kept].sum())
            self._regrown[g.name] = torch.zeros(g.size, dtype=torch.bool)
            self._regrown[g.name][grown] = True
            self.history.append(
                {
                    "step": step,
                    "iteration": iteration,
                    "group": g.name,
                    "size": g.size,
                    "before": int(alive.sum()),
                    "allocated": int(k),
                    "regrown": int(grown.numel()),
                    "active": int(mask.sum()),
                    "recovered": int((mask & ~alive).sum()),
                    "kept_regrown": kept_regrown,
                    "delta": delta,
                }
            )
        self.state.set_active(masks)
        self.state.hold(optimizer)

    def counts(self) -> dict[str, int]:
        return self.state.counts()

    def effective_flops(self) -> float:
        """FLOPs of the sub-model the masks define (equal to the extracted model's)."""
        return self.flops_model.flops(self.counts())
