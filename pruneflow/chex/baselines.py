"""The comparison's baselines at equal FLOPs: a uniformly thinned network trained from scratch
(``static``) and one-shot L1-norm channel pruning of a dense network (``prune_finetune``).

Both use the same channel groups as CHEX (residual channels pruned together) and the same
uniform per-group counts, calibrated to the FLOPs target with the exact FLOPs formula, so the
three methods differ only in how the architecture and its weights are found.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pruneflow.chex.extract import extract, keep_first
from pruneflow.chex.flops import FlopsModel
from pruneflow.chex.groups import ChannelGroup, find_groups
from pruneflow.chex.masks import MaskState
from pruneflow.chex.realloc import uniform_allocation
from pruneflow.seeding import torch_seeded


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
    minimum = [min(g.size, max(1, math.ceil(min_fraction * g.size))) for g in groups]
    fits = flops.fits((1.0 - flops_reduction) * flops.dense())
    counts = uniform_allocation([g.size for g in groups], minimum, fits)
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
    dense: nn.Module, example: torch.Tensor, counts: dict[str, int], seed: int
) -> nn.Module:
    """The uniformly thinned architecture of ``dense``, freshly initialised."""
    groups = find_groups(dense, example)
    return reinitialise(extract(dense, groups, keep_first(groups, counts), example), seed)


def l1_prune(model: nn.Module, example: torch.Tensor, counts: dict[str, int]) -> nn.Module:
    """Keep, in every group, the ``counts`` channels whose filters have the largest L1 norm
    (summed over the group's convs: a residual channel is judged by all its producers)."""
    groups = find_groups(model, example)
    state = MaskState(model, groups)
    active = {}
    for g in groups:
        norms = state.channel_matrix(g).abs().sum(0)
        keep = torch.argsort(norms, descending=True, stable=True)[: counts[g.name]]
        mask = torch.zeros(g.size, dtype=torch.bool)
        mask[keep] = True
        active[g.name] = mask
    return extract(model, groups, active, example)
