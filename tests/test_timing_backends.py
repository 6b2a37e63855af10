"""Execution backends: every backend computes the masked dense layer, and the registry seam."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.timing import (
    available_backends,
    build_layer,
    get_backend,
    register_backend,
    registered_backends,
    unregister_backend,
)
from pruneflow.timing.backends import LayerBackend
from pruneflow.timing.layers import DenseConv, DenseLinear
from pruneflow.timing.ops import MaxPool2x2

BACKENDS = ["dense", "csr", "csr_numba"]


def _pruned(layer: nn.Module, sparsity: float, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mask = torch.rand(layer.weight.shape, generator=gen) >= sparsity
        layer.weight.mul_(mask)
        if layer.bias is not None:
            layer.bias.normal_(generator=gen)
    return layer


def _reference(layer: nn.Module, x: torch.Tensor, relu: bool) -> torch.Tensor:
    with torch.no_grad():
        y = layer(x)
    return torch.relu(y) if relu else y


def test_cpu_backends_are_registered_and_available() -> None:
    assert set(BACKENDS) <= set(available_backends("cpu"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [1, 5, 16, 37, 64, 70])
def test_linear_backends_equal_the_masked_dense_layer(backend: str, batch: int) -> None:
    torch.manual_seed(batch)
    layer = _pruned(nn.Linear(40, 24), 0.8, seed=batch)
    x = torch.randn(batch, 40)
    for relu in (False, True):
        for feature_major in (False, True):
            exe = build_layer(backend, layer, relu=relu)
            exe.feature_major = feature_major
            with torch.no_grad():
                y = exe(x)
                again = exe(x.clone())  # a second call reuses cached state
            ref = _reference(layer, x, relu)
            assert y.shape == ref.shape
            torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(again, ref, rtol=1e-5, atol=1e-5)
            if feature_major:
                assert y.t().is_contiguous()  # the [out, B] buffer, handed on without a copy
            else:
                assert y.is_contiguous()


@pytest.mark.parametrize("batch,sparsity", [(64, 0.5), (70, 0.8), (16, 0.3)])
def test_linear_column_chunks_equal_the_masked_dense_layer(batch: int, sparsity: float) -> None:
    # wide enough that the operand is split into L1-sized column chunks
    layer = _pruned(nn.Linear(600, 40), sparsity)
    exe = build_layer("csr_numba", layer, relu=True)
    x = torch.randn(batch, 600)
    with torch.no_grad():
        y = exe(x)
    ptrs = next(iter(exe._geo.values()))[0]
    assert ptrs.shape[0] > 1  # really chunked
    torch.testing.assert_close(y, _reference(layer, x, True), rtol=1e-5, atol=1e-5)


def test_linear_accepts_feature_major_input() -> None:
    layer = _pruned(nn.Linear(32, 16), 0.7)
    x_fm = torch.randn(32, 8).t()  # strides (1, 8): what a feature-major layer hands on
    ref = _reference(layer, x_fm.contiguous(), False)
    for backend in BACKENDS:
        with torch.no_grad():
            torch.testing.assert_close(build_layer(backend, layer)(x_fm), ref, rtol=1e-5, atol=1e-5)


CONVS = [
    dict(in_channels=4, out_channels=8, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=8, kernel_size=3, padding=1, stride=2, bias=False),
    dict(in_channels=4, out_channels=8, kernel_size=1),
    dict(in_channels=4, out_channels=8, kernel_size=1, stride=2),
    dict(in_channels=4, out_channels=8, kernel_size=3, padding=2, dilation=2),
    dict(in_channels=4, out_channels=8, kernel_size=(3, 5), padding=(0, 1)),
    dict(in_channels=3, out_channels=8, kernel_size=7, stride=2, padding=3),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", CONVS, ids=lambda s: str(sorted(s.items())))
@pytest.mark.parametrize("hw", [(13, 11), (4, 5)])  # large maps and small ones: both layouts
def test_conv_backends_equal_the_masked_dense_layer(backend: str, spec: dict, hw: tuple) -> None:
    torch.manual_seed(0)
    layer = _pruned(nn.Conv2d(**spec), 0.7)
    x = torch.randn(3, spec["in_channels"], *hw)
    for relu in (False, True):
        exe = build_layer(backend, layer, relu=relu)
        with torch.no_grad():
            y = exe(x)
            again = exe(x.clone())
        ref = _reference(layer, x, relu)
        assert y.is_contiguous() and y.shape == ref.shape
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(again, ref, rtol=1e-5, atol=1e-5)


def test_conv_accepts_non_contiguous_input() -> None:
    layer = _pruned(nn.Conv2d(4, 6, 3, padding=1), 0.5)
    x = torch.randn(2, 9, 9, 4).permute(0, 3, 1, 2)  # channels-last memory
    ref = _reference(layer, x.contiguous(), True)
    with torch.no_grad():
        torch.testing.assert_close(
            build_layer("csr_numba", layer, relu=True)(x), ref, rtol=1e-5, atol=1e-5
        )


def test_fully_sparse_and_dense_weights() -> None:
    for sparsity in (0.0, 1.0):
        layer = _pruned(nn.Linear(20, 10), sparsity)
        x = torch.randn(4, 20)
        with torch.no_grad():
            torch.testing.assert_close(
                build_layer("csr_numba", layer)(x),
                _reference(layer, x, False),
                rtol=1e-5,
                atol=1e-5,
            )


def test_csr_numba_rejects_what_it_cannot_run() -> None:
    grouped = nn.Conv2d(4, 8, 3, groups=2)
    assert not get_backend("csr_numba").supports(grouped)
    assert get_backend("dense").supports(grouped)
    with pytest.raises(PruneflowError, match="cannot run"):
        build_layer("csr_numba", grouped)
    exe = build_layer("csr_numba", nn.Linear(4, 4))
    with pytest.raises(PruneflowError, match="float32"), torch.no_grad():
        exe(torch.randn(2, 4, dtype=torch.float64))


def test_registry_errors_and_extension_seam() -> None:
    with pytest.raises(PruneflowError, match="unknown backend 'nope'"):
        get_backend("nope")
    with pytest.raises(PruneflowError, match="already registered"):
        register_backend(LayerBackend("dense", DenseLinear, DenseConv))
    with pytest.raises(PruneflowError, match="Backend protocol"):
        register_backend(object())  # type: ignore[arg-type]
    offline = LayerBackend(
        "test_offline", DenseLinear, DenseConv, device="test", is_available=lambda: False
    )
    register_backend(offline, replace=True)
    try:
        assert "test_offline" in registered_backends()
        assert "test_offline" not in available_backends("test")
        with pytest.raises(PruneflowError, match="not available"):
            get_backend("test_offline")
    finally:
        unregister_backend("test_offline")
    assert "test_offline" not in registered_backends()


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 3, 7, 9), (1, 2, 5, 4)])
def test_fast_maxpool_equals_torch(shape: tuple) -> None:
    x = torch.randn(*shape)
    assert torch.equal(MaxPool2x2()(x), nn.functional.max_pool2d(x, 2))


def test_small_work_runs_on_the_calling_thread_with_two_threads() -> None:
    from pruneflow.timing import kernels, thread_scope

    small = _pruned(nn.Linear(64, 32), 0.9)  # ~200 nonzeros x batch 8: far below a fork/join
    large = _pruned(nn.Linear(1024, 512), 0.5)  # ~260k nonzeros x batch 64
    for layer, batch, parallel in ((small, 8, False), (large, 64, True)):
        assert kernels.parallel_worthwhile(int(layer.weight.count_nonzero()) * batch) is parallel
        x = torch.randn(batch, layer.in_features)
        exe = build_layer("csr_numba", layer, relu=True)
        with torch.no_grad(), thread_scope(2):
            y = exe(x)
        run = next(iter(exe._geo.values()))[-1]
        assert run is (kernels.spmm if parallel else kernels.spmm_serial)
        torch.testing.assert_close(y, _reference(layer, x, True), rtol=1e-5, atol=1e-5)
    conv = _pruned(nn.Conv2d(8, 8, 3, padding=1), 0.95)
    x = torch.randn(2, 8, 6, 6)
    exe = build_layer("csr_numba", conv)
    with torch.no_grad(), thread_scope(2):
        torch.testing.assert_close(exe(x), _reference(conv, x, False), rtol=1e-5, atol=1e-5)
    assert not next(iter(exe._geo.values())).parallel


def test_work_on_the_calling_thread_is_blocked_as_on_one_thread() -> None:
    # row blocks split for two threads only make a serial run reload each column chunk once
    # per block (mlp1024's 95% layers ran 1.6x slower under two numba threads than one)
    from pruneflow.timing import kernels, thread_scope

    layer = _pruned(nn.Linear(1024, 1024), 0.95)  # ~52k nonzeros x batch 64: serial
    exe = build_layer("csr_numba", layer)
    with thread_scope(2):
        two = exe._geometry(64)
    with thread_scope(1):
        one = exe._geometry(64)
    assert two[-1] is kernels.spmm_serial
    assert two[3:5] == one[3:5] and all(
        (a == b).all() for a, b in zip(two[:3], one[:3], strict=True)
    )
    conv = build_layer("csr_numba", _pruned(nn.Conv2d(16, 16, 3, padding=1), 0.95))
    with thread_scope(2):
        two_conv = conv._geometry(2, 8, 8)
    with thread_scope(1):
        one_conv = conv._geometry(2, 8, 8)
    assert not two_conv.parallel
    assert (two_conv.col_block, two_conv.row_block) == (one_conv.col_block, one_conv.row_block)
