"""``resnet_mini``: a small residual CNN with BatchNorm, for channel pruning on small images.

A 3x3 stem to ``w`` channels, then three stages of one basic block each (widths ``w``, ``2w``,
``4w``; stride 2 at the start of stages 2 and 3), global average pooling and a linear
classifier. A block is ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` where the
shortcut is the identity when shapes match and a 1x1 conv + BN projection where they change
(computed as subsample + unit-stride 1x1, which oneDNN trains correctly: see
:mod:`pruneflow.memory_format`).
Every conv is followed by a BatchNorm, which is what CHEX's BN-scale ranking needs.

Initialisation follows torchvision's ResNets (He normal, fan-out, for convs; BN scale 1, shift 0),
so results on this net compare with the ResNet-18 path.
"""

from __future__ import annotations

import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.memory_format import SubsampledPointwiseConv2d

InShape = tuple[int, int, int]


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with a residual connection (projected where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                SubsampledPointwiseConv2d(cin, cout, stride), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetMini(nn.Module):
    """Stem + three one-block stages of widths ``w, 2w, 4w`` + average pool + linear."""

    def __init__(self, in_shape: InShape, num_classes: int, width: int = 8):
        super().__init__()
        c, h, w = in_shape
        if width < 1:
            raise PruneflowError(f"resnet_mini width must be >= 1, got {width}")
        if h < 4 or w < 4:
            raise PruneflowError(f"resnet_mini needs inputs of at least 4x4 pixels, got {h}x{w}")
        self.conv1 = nn.Conv2d(c, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.stage1 = BasicBlock(width, width)
        self.stage2 = BasicBlock(width, 2 * width, stride=2)
        self.stage3 = BasicBlock(2 * width, 4 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.flatten(self.pool(x)))


def resnet_mini(in_shape: InShape, num_classes: int, width: int = 8) -> ResNetMini:
    """The zoo's builder: ``resnet_mini`` with width ``w`` (8 by default, for 28x28 mnist5k)."""
    return ResNetMini(in_shape, num_classes, width)
