"""The built-in architectures by name (:data:`MODEL_NAMES`).

``build_zoo(name, num_classes, in_shape)`` constructs one; :func:`pruneflow.models.build`
(:mod:`pruneflow.models.factory`) is what callers use for any model name: a zoo name,
``torchvision:NAME`` or the user's ``package.module:factory``. ``prunable_layers(model)`` lists
the Conv2d/Linear modules the pruning methods act on, in forward order.

All models take image batches ``[N, C, H, W]``; the MLPs flatten them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.models.resnet_mini import resnet_mini

InShape = tuple[int, int, int]


class MLP(nn.Module):
    """Fully connected net: flatten, then ``fc1 .. fcN`` with ReLU between them."""

    def __init__(self, in_features: int, hidden: list[int], num_classes: int):
        super().__init__()
        widths = [in_features, *hidden, num_classes]
        self.flatten = nn.Flatten()
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True), start=1):
            self.add_module(f"fc{i}", nn.Linear(a, b))
        self.depth = len(widths) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for i in range(1, self.depth + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.depth:
                x = torch.relu(x)
        return x


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """Five 3x3 conv+BN+ReLU layers and two linear layers, for 8x8 to 32x32 inputs.

    Two 2x2 max-pools (after conv2 and conv4) make the conv layers' costs differ by spatial
    size as well as width, which gives a sparsity search real trade-offs to make.
    """

    def __init__(self, in_shape: InShape, num_classes: int, width: int = 32):
        super().__init__()
        c, h, w = in_shape
        if h < 4 or w < 4:
            raise PruneflowError(f"smallcnn needs inputs of at least 4x4 pixels, got {h}x{w}")
        widths = [width, 2 * width, 4 * width, 4 * width, 8 * width]
        self.conv1 = _conv_bn(c, widths[0])
        self.conv2 = _conv_bn(widths[0], widths[1])
        self.pool1 = nn.MaxPool2d(2)
        self.conv3 = _conv_bn(widths[1], widths[2])
        self.conv4 = _conv_bn(widths[2], widths[3])
        self.pool2 = nn.MaxPool2d(2)
        self.conv5 = _conv_bn(widths[3], widths[4])
        self.flatten = nn.Flatten()
        flat = widths[4] * (h // 4) * (w // 4)
        self.fc1 = nn.Linear(flat, 256)
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv2(self.conv1(x)))
        x = self.pool2(self.conv4(self.conv3(x)))
        x = self.flatten(self.conv5(x))
        return self.fc2(torch.relu(self.fc1(x)))


def adapt_stem(model: nn.Module, attr_path: str, in_channels: int, cifar_stem: bool) -> None:
    """Swap the first conv for one taking ``in_channels`` (and a 3x3/stride-1 one for CIFAR)."""
    parent = model
    *parents, leaf = attr_path.split(".")
    for p in parents:
        parent = parent[int(p)] if p.isdigit() else getattr(parent, p)
    old = parent[int(leaf)] if leaf.isdigit() else getattr(parent, leaf)
    if cifar_stem:
        new = nn.Conv2d(in_channels, old.out_channels, 3, stride=1, padding=1, bias=False)
    elif in_channels != old.in_channels:
        new = nn.Conv2d(
            in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
        )
    else:
        return
    if leaf.isdigit():
        parent[int(leaf)] = new
    else:
        setattr(parent, leaf, new)


def _torchvision(arch: str, cifar_stem: bool = False) -> Callable[[InShape, int], nn.Module]:
    def make(in_shape: InShape, num_classes: int) -> nn.Module:
        import torchvision.models as tvm

        model = getattr(tvm, arch)(weights=None, num_classes=num_classes)
        stem = "features.0.0" if arch.startswith("mobilenet") else "conv1"
        adapt_stem(model, stem, in_shape[0], cifar_stem)
        if cifar_stem:
            model.maxpool = nn.Identity()
        return model

    return make


def _numel(in_shape: InShape) -> int:
    c, h, w = in_shape
    return c * h * w


def _smallcnn(width: int) -> Callable[[InShape, int], nn.Module]:
    return lambda s, k: SmallCNN(s, k, width=width)


# smallcnn at narrower widths (channels of conv1; conv5 has 8x as many): less redundancy, so
# pruning costs accuracy sooner and a comparison of sparsity profiles has room to show
SMALLCNN_WIDTHS = (8, 12, 16, 24)

_BUILDERS: dict[str, Callable[[InShape, int], nn.Module]] = {
    "lenet300100": lambda s, k: MLP(_numel(s), [300, 100], k),
    "mlp1024": lambda s, k: MLP(_numel(s), [1024, 1024, 1024], k),
    "smallcnn": _smallcnn(32),
    **{f"smallcnn_w{w}": _smallcnn(w) for w in SMALLCNN_WIDTHS},
    "resnet_mini": lambda s, k: resnet_mini(s, k, width=8),
    "resnet18_cifar": _torchvision("resnet18", cifar_stem=True),
    "resnet18": _torchvision("resnet18"),
    "resnet34": _torchvision("resnet34"),
    "resnet50": _torchvision("resnet50"),
    "mobilenet_v2": _torchvision("mobilenet_v2"),
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_zoo(name: str, num_classes: int, in_shape: InShape) -> nn.Module:
    """A freshly initialised zoo model (``name`` one of :data:`MODEL_NAMES`; arguments
    checked by :func:`pruneflow.models.build`, which every caller goes through)."""
    return _BUILDERS[name](in_shape, num_classes)


def prunable_layers(model: nn.Module) -> list[str]:
    """Names of the model's Conv2d and Linear modules, in registration (= forward) order."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not names:
        raise PruneflowError(f"{type(model).__name__} has no prunable (Conv2d/Linear) layers")
    return names
