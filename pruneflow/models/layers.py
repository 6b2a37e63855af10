"""A model's prunable layers, their shapes, and which of them a method prunes.

Every ``Conv2d`` and ``Linear`` is prunable (:func:`pruneflow.models.zoo.prunable_layers`);
which are pruned is :func:`pruneflow.sparsity.grid.skipped_layers`' rule (first and last left
dense by default, ``include``/``exclude`` glob patterns). ``pruneflow layers`` prints this table.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from torch import nn

from pruneflow.models.zoo import prunable_layers
from pruneflow.sparsity.grid import skipped_layers


@dataclass(frozen=True)
class LayerInfo:
    """One prunable layer: its name, module type, weight shape, weight count, and whether pruned."""

    name: str
    kind: str
    shape: tuple[int, ...]
    weights: int
    pruned: bool


def pruned_layers(
    model: nn.Module,
    model_name: str,
    skip_first_last: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[str]:
    """The prunable layers of ``model`` a method prunes, in forward order (the rest stay dense).

    A pattern that matches no layer, or a selection that leaves none, is one clear error."""
    names = prunable_layers(model)
    skipped = set(skipped_layers(model_name, names, skip_first_last, include, exclude))
    return [n for n in names if n not in skipped]


def layer_table(
    model: nn.Module,
    model_name: str,
    skip_first_last: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[LayerInfo]:
    """Every prunable layer of ``model`` in forward order, marked pruned or left dense."""
    chosen = pruned_layers(model, model_name, skip_first_last, include, exclude)
    return marked_layers(model, set(chosen))


def marked_layers(model: nn.Module, pruned: Collection[str]) -> list[LayerInfo]:
    """Every prunable layer of ``model`` in forward order, pruned when it is in ``pruned``
    (CHEX's rule is its channel groups', :func:`pruneflow.chex.groups.find_groups`)."""
    names = prunable_layers(model)
    modules = dict(model.named_modules())
    return [
        LayerInfo(
            name,
            type(modules[name]).__name__,
            tuple(modules[name].weight.shape),
            int(modules[name].weight.numel()),
            name in pruned,
        )
        for name in names
    ]
