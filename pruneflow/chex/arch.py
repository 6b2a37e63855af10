"""Building the models CHEX runs on, ``resnet_mini`` included before the zoo registers it."""

from __future__ import annotations

from torch import nn

from pruneflow.models import MODEL_NAMES
from pruneflow.models.resnet_mini import resnet_mini
from pruneflow.seeding import torch_seeded
from pruneflow.train import seeded_build


def build_model(
    name: str, num_classes: int, in_shape: tuple[int, int, int], seed: int
) -> nn.Module:
    """A freshly initialised model ``name`` with weights drawn after ``torch.manual_seed(seed)``."""
    if name == "resnet_mini" and name not in MODEL_NAMES:
        with torch_seeded(seed):  # see pruneflow.seeding
            return resnet_mini(tuple(int(v) for v in in_shape), int(num_classes))
    return seeded_build(name, num_classes, in_shape, seed)
