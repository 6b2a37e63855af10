"""``build``: a freshly initialised model from any model name.

A name is a zoo architecture (:mod:`pruneflow.models.zoo`), ``torchvision:NAME`` or the
user's ``package.module:factory`` (:mod:`pruneflow.models.sources`). The model's random
weights come from torch's global generator: build inside
:func:`pruneflow.seeding.torch_seeded` for weights that a seed decides (``seeded_build``).
"""

from __future__ import annotations

from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.models.sources import build_source, parse_model_name
from pruneflow.models.zoo import InShape, build_zoo
from pruneflow.seeding import GLOBAL_RNG_LOCK


def build(name: str, num_classes: int, in_shape: InShape) -> nn.Module:
    """A freshly initialised model ``name`` for ``in_shape = (C, H, W)`` and ``num_classes``;
    a name, class count or shape that cannot be built is one clear error."""
    with GLOBAL_RNG_LOCK:  # module constructors draw from the global generator
        return _build(name, num_classes, in_shape)


def _build(name: str, num_classes: int, in_shape: InShape) -> nn.Module:
    source = parse_model_name(name)
    if num_classes < 2:
        raise PruneflowError(f"a classifier needs at least 2 classes, got {num_classes}")
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise PruneflowError(f"in_shape must be (channels, height, width), got {in_shape}")
    shape = (int(in_shape[0]), int(in_shape[1]), int(in_shape[2]))
    if source.kind != "zoo":
        return build_source(source, int(num_classes), shape)
    return build_zoo(name, int(num_classes), shape)
