"""A user's model with branches (two parallel convolutions concatenated, a residual add),
a factory taking ``num_classes`` and ``in_shape``, and factories that misbehave."""

from __future__ import annotations

import torch
from torch import nn


class Branchy(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.left = nn.Conv2d(width, width, 3, padding=1)
        self.right = nn.Conv2d(width, width, 1)
        self.merge = nn.Conv2d(2 * width, width, 3, padding=1, stride=2)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Sequential(nn.Linear(width, 16), nn.ReLU(), nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        both = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], dim=1)
        y = torch.relu(self.bn(self.merge(both)))
        y = y + nn.functional.avg_pool2d(x, 2)
        return self.head(y.mean(dim=(2, 3)))


def make(num_classes: int, in_shape: tuple[int, int, int]) -> nn.Module:
    return Branchy(num_classes, in_shape[0])


def make_fixed() -> nn.Module:
    return Branchy(2, 3)


def raises(num_classes: int, in_shape: tuple[int, int, int]) -> nn.Module:
    raise RuntimeError("out of widgets")


def not_a_module(num_classes: int, in_shape: tuple[int, int, int]) -> dict:
    return {"num_classes": num_classes}


def no_layers(num_classes: int, in_shape: tuple[int, int, int]) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.ReLU())
