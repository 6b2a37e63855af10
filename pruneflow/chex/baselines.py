"""The comparison's baselines at equal FLOPs.

* ``static``: a uniformly thinned network trained from scratch (Liu et al., "Rethinking the
  Value of Network Pruning", ICLR 2019: the pruned architecture's own training baseline).
* ``l1_norm``: one-shot L1-norm filter pruning of a pre-trained dense network to the same
  uniform per-layer widths (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017,
  Sec. 3.1), then fine-tuning.
* ``slimming``: network slimming (Liu et al., "Learning Efficient Convolutional Networks
  through Network Slimming", ICCV 2017): pre-training with an L1 penalty on the BatchNorm
  scales (Sec. 3.2, Eq. 1), one global threshold on |gamma| over the whole network, then
  fine-tuning. The threshold is the one that meets the FLOPs target.

All use the same channel groups as CHEX (residual channels pruned together; a group's BN score
is the mean |gamma| over its BatchNorms) and budgets calibrated with the exact FLOPs formula,
so the methods differ only in how the architecture and its weights are found.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from pruneflow.chex.extract import extract, keep_first
from pruneflow.chex.flops import FlopsModel
from pruneflow.chex.groups import ChannelGroup, find_groups
from pruneflow.chex.masks import MaskState
from pruneflow.chex.realloc import allocate, uniform_allocation
from pruneflow.seeding import torch_seeded


def _minimum(groups: list[ChannelGroup], min_fraction: float) -> list[int]:
    return [min(g.size, max(1, math.ceil(min_fraction * g.size))) for g in groups]


def uniform_counts(
    model: nn.Module,
    example: torch.Tensor,
    flops_reduction: float,
    min_fraction: float,
    groups: list[ChannelGroup] | None = None,
) -> dict[str, int]:
    """Per-group channel counts of the uniformly thinned model at ``flops_reduction``."""
    groups = groups or find_groups(model, example)
    flops = FlopsModel(model, tuple(example.shape[1:]), groups)
    fits = flops.fits((1.0 - flops_reduction) * flops.dense())
    counts = uniform_allocation([g.size for g in groups], _minimum(groups, min_fraction), fits)
    return {g.name: c for g, c in zip(groups, counts, strict=True)}


@torch.no_grad()
def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """Fresh weights for a (thinned) model: He normal (fan-out) convs, unit BN, default linears.

    This is the ResNets' rule (torchvision's and resnet_mini's), so a thinned ResNet starts
    exactly as a narrower ResNet built from scratch would.
    """
    with torch_seeded(seed):  # nn.init draws from the global generator: see pruneflow.seeding
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                m.reset_parameters()
        return model


def static_model(
    dense: nn.Module,
    example: torch.Tensor,
    counts: dict[str, int],
    seed: int,
    groups: list[ChannelGroup] | None = None,
) -> nn.Module:
    """The uniformly thinned architecture of ``dense``, freshly initialised."""
    groups = groups or find_groups(dense, example)
    return reinitialise(extract(dense, groups, keep_first(groups, counts), example), seed)


def l1_masks(
    model: nn.Module,
    example: torch.Tensor,
    counts: dict[str, int],
    groups: list[ChannelGroup] | None = None,
) -> dict[str, torch.Tensor]:
    """Per group, the ``counts`` channels whose filters have the largest L1 norm (summed over
    the group's convs: a residual channel is judged by all its producers), Li et al. Sec. 3.1."""
    groups = groups or find_groups(model, example)
    state = MaskState(model, groups)
    active = {}
    for g in groups:
        norms = state.channel_matrix(g).abs().sum(0)
        keep = torch.argsort(norms, descending=True, stable=True)[: counts[g.name]]
        mask = torch.zeros(g.size, dtype=torch.bool)
        mask[keep] = True
        active[g.name] = mask
    return active


@contextlib.contextmanager
def bn_l1_penalty(model: nn.Module, strength: float) -> Iterator[None]:
    """Inside, every BatchNorm scale's gradient carries ``strength * sign(gamma)``: the
    subgradient of ``strength * sum |gamma|`` added to the loss (network slimming's sparsity
    regularisation, Liu et al., ICCV 2017, Eq. 1; their code adds it to the gradient after the
    backward pass, as this does). ``strength`` 0 adds nothing."""
    handles = []
    if strength > 0:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.weight is not None:
                gamma = m.weight
                handles.append(
                    gamma.register_hook(lambda grad, g=gamma: grad + strength * torch.sign(g))
                )
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def slimming_masks(
    model: nn.Module,
    example: torch.Tensor,
    flops_reduction: float,
    min_fraction: float,
    groups: list[ChannelGroup] | None = None,
) -> dict[str, torch.Tensor]:
    """Network slimming's selection at a FLOPs target: channels ranked by |gamma| over the
    whole network, taken while the FLOPs budget holds (every group keeps its own best
    ``min_fraction`` first, so no layer vanishes); per group the channels kept."""
    groups = groups or find_groups(model, example)
    state = MaskState(model, groups)
    flops = FlopsModel(model, tuple(example.shape[1:]), groups)
    scores = [state.bn_scores(g) for g in groups]
    alive = [torch.ones(g.size, dtype=torch.bool) for g in groups]
    fits = flops.fits((1.0 - flops_reduction) * flops.dense())
    counts = allocate(scores, alive, _minimum(groups, min_fraction), fits)
    masks = {}
    for g, score, k in zip(groups, scores, counts, strict=True):
        mask = torch.zeros(g.size, dtype=torch.bool)
        mask[torch.argsort(score, descending=True, stable=True)[:k]] = True
        masks[g.name] = mask
    return masks
