"""User modules the runtime cannot take apart: a forward that reads a conv's weight and calls
``F.conv2d`` itself, and one that also branches on the data (``torch.fx`` cannot trace it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FunctionalConv(nn.Module):
    """stem -> a conv applied through its weight tensor -> a linear head."""

    def __init__(self, num_classes: int, in_shape: tuple[int, int, int] = (3, 16, 16)):
        super().__init__()
        channels, h, w = in_shape
        self.stem = nn.Conv2d(channels, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16 * h * w, num_classes)

    def body_out(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(F.conv2d(x, self.body.weight, self.body.bias, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body_out(torch.relu(self.stem(x)))
        return self.head(x.flatten(1))


class Untraceable(FunctionalConv):
    """The same, with a branch on the data: traced by no one, converted module by module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        if bool(x.mean() > -1.0):  # always true; fx cannot know
            x = self.body_out(x)
        return self.head(x.flatten(1))


def make(num_classes: int, in_shape: tuple[int, int, int]) -> nn.Module:
    return FunctionalConv(num_classes, tuple(in_shape))


def make_untraceable(num_classes: int, in_shape: tuple[int, int, int]) -> nn.Module:
    return Untraceable(num_classes, tuple(in_shape))
