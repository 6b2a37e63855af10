"""Channel groups and their width grids.

The groups are CHEX's (:func:`pruneflow.chex.groups.find_groups`): the output channels of one
or more convs that must be removed together, channels meeting in a residual sum being one
group. On top of them this module records, for every conv or linear layer of the model, which
group its input channels and its output channels belong to (:class:`Wiring`): a thinned
layer's cost depends on both.

Width grid: ``levels`` kept fractions evenly spaced from 1.0 down to ``min_fraction``; a group
of ``n`` channels keeps ``round(f * n / multiple) * multiple`` channels at fraction ``f``
(level 0 keeps all ``n``). ``multiple`` is the hardware's preferred channel multiple (SIMD
width); a level that rounds to zero channels is an error, never a silently dropped group.

A floor of ``min_channels`` per group: the levels that would keep fewer channels are dropped
for that group, i.e. they repeat its narrowest level at or above the floor, so the grid stays
one ``[groups, levels]`` array and the DP can never choose a narrower width. A one-channel
bottleneck is what a calibration-loss search picks at high compression when the least-squares
refit makes the stitched model look fine, yet fine-tuning cannot recover from it.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pruneflow.chex.groups import ChannelGroup, find_groups
from pruneflow.errors import PruneflowError

__all__ = [
    "Wiring",
    "chain_order",
    "fractions",
    "group_widths",
    "structured_groups",
    "thin_copy",
    "width_grid",
]


def fractions(levels: int, min_fraction: float) -> list[float]:
    """``levels`` kept fractions from 1.0 down to ``min_fraction``, evenly spaced."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise PruneflowError(f"a width grid needs at least 2 levels, got {levels!r}")
    if not 0.0 < min_fraction < 1.0:
        raise PruneflowError(f"min_fraction must lie in (0, 1), got {min_fraction!r}")
    return [float(f) for f in np.linspace(1.0, min_fraction, levels)]


def group_widths(
    name: str, size: int, grid: Sequence[float], multiple: int, min_channels: int = 1
) -> list[int]:
    """Channels kept by group ``name`` (``size`` channels) at every fraction of ``grid``;
    levels below ``min_channels`` repeat the narrowest level at or above it."""
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise PruneflowError(f"channel multiple must be an integer >= 1, got {multiple!r}")
    if isinstance(min_channels, bool) or not isinstance(min_channels, int) or min_channels < 1:
        raise PruneflowError(f"min_channels must be an integer >= 1, got {min_channels!r}")
    if size < min_channels:
        raise PruneflowError(
            f"channel group '{name}' has {size} channels, fewer than structured.min_channels="
            f"{min_channels}: no width level is left; lower structured.min_channels"
        )
    widths = []
    for i, f in enumerate(grid):
        if i == 0:
            widths.append(size)
            continue
        # round half up: Python's round() sends 0.5 to 0 and would drop a channel it need not
        count = min(size, int(math.floor(f * size / multiple + 0.5)) * multiple)
        if count < 1:
            raise PruneflowError(
                f"width level {i} (kept fraction {f:.3g}) of channel group '{name}' "
                f"({size} channels) rounds to 0 channels at multiple {multiple}; raise "
                "structured.min_fraction or lower structured.multiple"
            )
        widths.append(count)
    narrowest = min(w for w in widths if w >= min_channels)
    return [w if w >= min_channels else narrowest for w in widths]


def width_grid(
    groups: Sequence[ChannelGroup], grid: Sequence[float], multiple: int, min_channels: int = 1
) -> np.ndarray:
    """Kept channels ``[groups, levels]`` (int64), at least ``min_channels`` per group."""
    return np.array(
        [group_widths(g.name, g.size, grid, multiple, min_channels) for g in groups], np.int64
    )


@dataclass(frozen=True)
class Wiring:
    """Which channel group feeds and which one leaves each conv/linear layer (None: fixed).

    ``order``: the groups' positions in the DP's chain (forward order). ``charged``: the group
    a layer's measured time is charged to: the later of its input and output group in that
    order (so that the other one is, in a chain, the previous group, whose level the DP
    knows), or None when neither is a group (its time is part of the fixed remainder).
    """

    inputs: dict[str, str | None]
    outputs: dict[str, str | None]
    order: dict[str, int]

    def charged(self, layer: str) -> str | None:
        pair = [g for g in (self.inputs[layer], self.outputs[layer]) if g is not None]
        return max(pair, key=self.order.__getitem__) if pair else None


def _layer_macs(model: nn.Module, example: torch.Tensor) -> dict[str, float]:
    """Multiply-accumulates of every conv and linear layer of ``model`` on ``example``."""
    macs: dict[str, float] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):

            def hook(mod: nn.Module, _args: tuple, out: torch.Tensor, name: str = name) -> None:
                per_output = mod.weight[0].numel()  # c_in / groups * kernel area, or in_features
                macs[name] = float(out.numel() * per_output)

            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    return macs


# exhaustive search over group orders up to this many groups (8! = 40,320 orders)
_MAX_ORDERED_GROUPS = 8


def chain_order(
    names: Sequence[str],
    inputs: Mapping[str, str | None],
    outputs: Mapping[str, str | None],
    cost: Mapping[str, float],
) -> list[str]:
    """The order of the groups ``names`` for the chain DP: the one that leaves the least
    ``cost`` (dense MACs) on layers whose input and output groups are not neighbours in it.

    The timing table holds each group's time given the previous group's level only, so it is
    exact for a layer joining neighbouring groups and approximate for any other (a residual
    join). In forward order resnet_mini's second stage reads the stage-1 sum two groups back
    (a 3x3 conv); with the stage-1 inner group first, only the two 1x1 shortcut projections
    are left off the chain. Ties keep the forward order; beyond ``_MAX_ORDERED_GROUPS`` groups
    the forward order is kept.
    """
    names = list(names)
    edges = [
        (inputs[layer], outputs[layer], cost.get(layer, 0.0))
        for layer in inputs
        if inputs[layer] is not None
        and outputs[layer] is not None
        and inputs[layer] != outputs[layer]
    ]
    if not edges or len(names) > _MAX_ORDERED_GROUPS:
        return names

    def off_chain(order: Sequence[str]) -> float:
        pos = {g: i for i, g in enumerate(order)}
        return sum(c for a, b, c in edges if abs(pos[a] - pos[b]) != 1)

    # itertools.permutations yields in lexicographic order of positions: the forward order
    # first, so min() keeps it (or the earliest) among equals
    return list(min(itertools.permutations(names), key=off_chain))


def structured_groups(model: nn.Module, example: torch.Tensor) -> tuple[list[ChannelGroup], Wiring]:
    """The channel groups of ``model`` in chain order (:func:`chain_order`; forward order for
    a chain of convs) and every layer's :class:`Wiring`.

    Raises :class:`PruneflowError` (one line) for a model with no channel dimension to remove.
    """
    try:
        groups = find_groups(model, example)
    except PruneflowError as exc:
        raise PruneflowError(
            f"structured pruning cannot thin {type(model).__name__}: {exc}"
        ) from None
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    inputs: dict[str, str | None] = dict.fromkeys(layers)
    outputs: dict[str, str | None] = dict.fromkeys(layers)
    for g in groups:
        for p in g.producers:
            outputs[p] = g.name
        for s in g.slices:
            if s.attr == "weight" and s.dim == 1 and s.module in inputs:
                inputs[s.module] = g.name
    order = chain_order([g.name for g in groups], inputs, outputs, _layer_macs(model, example))
    by_name = {g.name: g for g in groups}
    groups = [by_name[n] for n in order]
    return groups, Wiring(inputs, outputs, {g.name: i for i, g in enumerate(groups)})


@torch.no_grad()
def thin_copy(
    model: nn.Module, groups: Sequence[ChannelGroup], keep: Mapping[str, torch.Tensor]
) -> nn.Module:
    """A copy of ``model`` with only the channels ``keep[g]`` (channel numbers) of every group.

    Every tensor slice a group lists (filters, biases, BatchNorm parameters and statistics,
    consumers' input slices) is cut down with ``index_select``, and the layers' size
    attributes follow. It gives the same model as CHEX's extraction
    (:func:`pruneflow.chex.extract.extract`) without tracing a dependency graph per call: the
    timing table measures ``|S|^2`` thinned models.
    """
    sub = copy.deepcopy(model)
    modules = dict(sub.named_modules())
    cuts: dict[tuple[str, str, int], list[torch.Tensor]] = {}
    for g in groups:
        kept = torch.zeros(g.size, dtype=torch.bool)
        kept[torch.as_tensor(keep[g.name], dtype=torch.long)] = True
        for s in g.slices:
            cuts.setdefault((s.module, s.attr, s.dim), []).append(s.idx[~kept[s.root]])
    for (name, attr, dim), dropped in cuts.items():
        module = modules[name]
        tensor = getattr(module, attr)
        drop = torch.cat(dropped).unique()
        rest = torch.ones(tensor.shape[dim], dtype=torch.bool)
        rest[drop] = False
        new = tensor.index_select(dim, rest.nonzero().flatten()).clone()
        if isinstance(tensor, nn.Parameter):
            setattr(module, attr, nn.Parameter(new, requires_grad=tensor.requires_grad))
        else:
            setattr(module, attr, new)
    for module in modules.values():
        if isinstance(module, nn.Conv2d):
            module.out_channels, module.in_channels = module.weight.shape[:2]
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
            module.num_features = module.running_mean.shape[0]
    return sub
