"""A stem convolution (few input channels and taps) left dense runs on the direct kernel, in
every runtime: outputs equal the masked model's, it writes into a direct consumer's operand,
and convolutions with more channels or taps stay on torch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneflow.timing import SparseRuntime
from pruneflow.timing.direct_conv import DirectSparseConv
from pruneflow.timing.runtime import dense_backend


def _net(cin: int, k: int, stride: int = 1) -> nn.Sequential:
    gen = torch.Generator().manual_seed(cin * 10 + k)
    net = nn.Sequential(
        nn.Conv2d(cin, 6, k, stride=stride, padding=k // 2),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=1),
        nn.ReLU(),
    )
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(generator=gen)
                mod.running_var.uniform_(0.5, 2.0, generator=gen)
                mod.weight.normal_(generator=gen)
                mod.bias.normal_(generator=gen)
        net[3].weight.mul_(torch.rand(net[3].weight.shape, generator=gen) >= 0.7)
    return net.eval()


@pytest.mark.parametrize("cin, k, stride", [(1, 3, 1), (3, 3, 1), (3, 3, 2), (1, 5, 1), (2, 1, 1)])
@pytest.mark.parametrize("backends", ["dense", "direct_numba", "mapping", "auto"])
def test_a_stem_runs_on_the_direct_kernel_and_equals_the_model(
    cin: int, k: int, stride: int, backends: str
) -> None:
    net = _net(cin, k, stride)
    chosen = {"3": "direct_numba"} if backends == "mapping" else backends
    rt = SparseRuntime(net, chosen)
    assert rt.backends["0"] == "direct_numba"
    with torch.no_grad():
        for seed in (1, 2):  # the second call reuses the buffers written by the first
            x = torch.randn(3, cin, 11, 9, generator=torch.Generator().manual_seed(seed))
            torch.testing.assert_close(rt(x), net(x), rtol=1e-5, atol=1e-5)
    if rt.backends["3"] == "direct_numba":
        stem = rt.layer("0")
        assert isinstance(stem, DirectSparseConv) and stem._consumer() is rt.layer("3")


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(4, 8, 3, padding=1),  # more input channels than an image has
        nn.Conv2d(3, 8, 5, padding=2),  # 75 taps per output channel
        nn.Conv2d(3, 8, 3, padding=1, dilation=2),  # not a direct kernel's convolution
        nn.Linear(3, 8),
    ],
)
def test_other_layers_run_dense_on_torch(layer: nn.Module) -> None:
    assert dense_backend(layer) == "dense"


def test_a_wider_first_layer_stays_on_torch() -> None:
    net = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.ReLU()).eval()
    assert SparseRuntime(net, "dense").backends == {"0": "dense"}
