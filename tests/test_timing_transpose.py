"""The csr_numba linear layer's own transposing copy of a row-major batch: exact, and used
only where the rows read in step do not crowd into a few L1 sets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneflow.timing import build_layer
from pruneflow.timing.kernels import transpose_fits_l1, transpose_into


@pytest.mark.parametrize("shape", [(16, 12544), (64, 784), (1, 5), (3, 1), (7, 33)])
def test_transpose_into_is_exact(shape: tuple) -> None:
    x = torch.randn(*shape)
    y = torch.empty(shape[1], shape[0])
    transpose_into(x.numpy(), y.numpy())
    assert torch.equal(y, x.t())


def test_transpose_only_where_rows_spread_over_cache_sets() -> None:
    assert transpose_fits_l1(16, 12544) and transpose_fits_l1(64, 784)
    assert transpose_fits_l1(64, 1000) and transpose_fits_l1(4, 1024)
    assert not transpose_fits_l1(64, 1024) and not transpose_fits_l1(16, 2048)


@pytest.mark.parametrize("shape", [(16, 300), (64, 1024), (5, 2048)])
@pytest.mark.parametrize("layout", ["row-major", "feature-major", "strided"])
def test_linear_layer_on_every_input_layout(shape: tuple, layout: str) -> None:
    layer = nn.Linear(shape[1], 24)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(layer.weight.shape) > 0.8)
    x = torch.randn(*shape)
    if layout == "feature-major":
        x = x.t().contiguous().t()
    elif layout == "strided":
        x = torch.randn(shape[0], 2 * shape[1])[:, ::2]
    exe = build_layer("csr_numba", layer, relu=True)
    with torch.no_grad():
        torch.testing.assert_close(exe(x), torch.relu(layer(x)), rtol=1e-5, atol=1e-5)
