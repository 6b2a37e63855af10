"""The physically smaller model: masked channels removed from every layer that holds them.

A copy of the masked model is traced by Torch-Pruning and each group's masked channels are
removed through the dependency graph, which shrinks the convs, BNs and consumers (convs,
linears after a flatten, every member of a residual sum) consistently for any architecture.
Because masked channels output exactly zero, the extracted model computes the same function as
the masked one in eval mode (the tests check it on three architectures).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch_pruning as tp
from torch import nn

from pruneflow.chex.groups import ChannelGroup, trace
from pruneflow.errors import PruneflowError


def extract(
    model: nn.Module,
    groups: list[ChannelGroup],
    active: Mapping[str, torch.Tensor],
    example: torch.Tensor,
) -> nn.Module:
    """A copy of ``model`` without the channels ``active`` marks False (``model`` is unchanged)."""
    sub = copy.deepcopy(model)
    graph = trace(sub, example)
    modules = dict(sub.named_modules())
    for g in groups:
        mask = torch.as_tensor(active[g.name], dtype=torch.bool)
        if mask.shape != (g.size,):
            raise PruneflowError(
                f"mask of channel group '{g.name}' has {mask.numel()} entries, expected {g.size}"
            )
        if not mask.any():
            raise PruneflowError(f"channel group '{g.name}' has no channel left to keep")
        drop = (~mask).nonzero().flatten().tolist()
        if drop:
            graph.get_pruning_group(modules[g.root], tp.prune_conv_out_channels, drop).prune()
    return sub


def keep_first(groups: list[ChannelGroup], counts: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Masks keeping the first ``counts[g]`` channels of every group (a plain narrower net)."""
    return {g.name: torch.arange(g.size) < counts[g.name] for g in groups}
