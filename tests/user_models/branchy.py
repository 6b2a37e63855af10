"""A user's model with branches (two parallel convolutions concatenated, a residual add),
a factory taking ``num_classes`` and ``in_shape``, and factories that misbehave."""

from __future__ import annotations

import torch
from torch import nn


class Branchy(nn.Module):
    """stem -> (3x3 | 1x1) concatenated -> strided merge + pooled residual -> a wide MLP head."""

    def __init__(
        self, num_classes: int, in_shape: tuple[int, int, int] = (3, 16, 16), width: int = 8
    ):
        super().__init__()
        in_channels, h, w = in_shape
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.left = nn.Conv2d(width, width, 3, padding=1)
        self.right = nn.Conv2d(width, width, 1)
        self.merge = nn.Conv2d(2 * width, width, 3, padding=1, stride=2)
        self.bn = nn.BatchNorm2d(width)
        self.flatten = nn.Flatten()
        features = width * ((h + 1) // 2) * ((w + 1) // 2)
        self.head = nn.Sequential(nn.Linear(features, 512), nn.ReLU(), nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        both = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], dim=1)
        y = torch.relu(self.bn(self.merge(both)))
        y = y + nn.functional.avg_pool2d(x, 2)
        return self.head(self.flatten(y))


def make(num_classes: int, in_shape: tuple[int, int, int]) -> nn.Module:
    return Branchy(num_classes, tuple(in_shape))


def make_fixed() -> nn.Module:
    return Branchy(2)


def raises(num_classes: int, in_shape: tuple[int, int, int]) -> nn.Module:
    raise RuntimeError("out of widgets")


def not_a_module(num_classes: int, in_shape: tuple[int, int, int]) -> dict:
    return {"num_classes": num_classes}


def no_layers(num_classes: int, in_shape: tuple[int, int, int]) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.ReLU())
