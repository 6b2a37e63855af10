"""A 2x2 max pooling fused into the convolution before it: every backend's pooled layer equals
the masked layer, ReLU and ``max_pool2d``; the runtime fuses exactly the poolings that read
only a convolution's output; the profiler times the same conv+pool units the runtime runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.timing import (
    ProfileSettings,
    SparseRuntime,
    build_layer,
    profile_model,
    thread_scope,
)
from pruneflow.timing.direct_conv import _POOL_ROW, _POOL_SLOT, _pool_tiles
from pruneflow.timing.kernels import TILE

BACKENDS = ("direct_numba", "csr_numba", "csr", "dense")


def _pruned(layer: nn.Conv2d, sparsity: float, seed: int = 0) -> nn.Conv2d:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(layer.weight.shape, generator=gen) >= sparsity)
        layer.weight[:1] = 0.0  # a fully pruned output channel: pooled act(bias)
        if layer.bias is not None:
            layer.bias.normal_(generator=gen)
    return layer


def _reference(layer: nn.Conv2d, x: torch.Tensor, relu: bool) -> torch.Tensor:
    with torch.no_grad():
        y = layer(x)
        return F.max_pool2d(torch.relu(y) if relu else y, 2)


SPECS = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, padding=1, stride=2, bias=False),
    dict(kernel_size=1),
    dict(kernel_size=1, stride=2),
    dict(kernel_size=3, padding=0),
    dict(kernel_size=(3, 5), padding=(0, 1)),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: str(sorted(s.items())))
@pytest.mark.parametrize("hw", [(13, 11), (8, 9), (5, 4), (36, 37)])  # odd, even, a wide map
@pytest.mark.parametrize("backend", BACKENDS)
def test_pooled_layer_equals_masked_layer_relu_and_max_pool(
    spec: dict, hw: tuple, backend: str
) -> None:
    layer = _pruned(nn.Conv2d(5, 7, **spec), 0.7)
    x = torch.randn(2, 5, *hw, generator=torch.Generator().manual_seed(hw[0]))
    for relu in (False, True):
        exe = build_layer(backend, layer, relu=relu, pool=True)
        assert exe.pool
        ref = _reference(layer, x, relu)
        with torch.no_grad():
            y, again = exe(x), exe(x.clone())
        assert y.shape == ref.shape and y.is_contiguous()
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(again, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sparsity", [0.0, 0.9, 0.99, 1.0])
@pytest.mark.parametrize("hw", [(28, 28), (14, 14), (7, 7), (2, 3), (70, 66)])
def test_direct_pooled_at_every_density_and_map_size(sparsity: float, hw: tuple) -> None:
    # 28x28 / 14x14 / 7x7: smallcnn's maps (one, two, four row pairs per tile); 2x3: a single
    # pooled pixel; 70x66: a row pair wider than a tile, split in column blocks
    layer = _pruned(nn.Conv2d(6, 5, 3, padding=1), sparsity, seed=1)
    x = torch.randn(3, 6, *hw)
    exe = build_layer("direct_numba", layer, relu=True, pool=True)
    with torch.no_grad():
        torch.testing.assert_close(exe(x), _reference(layer, x, True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_direct_pooled_in_input_channel_chunks(stride: int) -> None:
    layer = _pruned(nn.Conv2d(160, 7, 3, padding=1, stride=stride), 0.5)
    x = torch.randn(2, 160, 14, 13)
    exe = build_layer("direct_numba", layer, relu=True, pool=True)
    assert exe._geometry(2, 14, 13).ptrs.shape[0] > 1  # partial sums wait in the slots
    with torch.no_grad():
        torch.testing.assert_close(exe(x), _reference(layer, x, True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hw", [(28, 28), (14, 13), (9, 70)])
def test_direct_pooled_on_two_threads_equals_one(hw: tuple) -> None:
    # above the fork/join threshold: the parallel kernel runs
    layer = _pruned(nn.Conv2d(48, 48, 3, padding=1), 0.5)
    x = torch.randn(4, 48, *hw)
    exe = build_layer("direct_numba", layer, relu=True, pool=True)
    ref = _reference(layer, x, True)
    with torch.no_grad():
        with thread_scope(2):
            y2 = exe(x)
            assert next(g for k, g in exe._geo.items() if k[-1] == 2).parallel
        with thread_scope(1):
            y1 = exe(x)
    torch.testing.assert_close(y2, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y1, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ho", [2, 3, 7, 14])
@pytest.mark.parametrize("wo", [2, 5, 14, 28, 31, 32, 33, 64, 70, 131])
@pytest.mark.parametrize("extra", [0, 2])  # pitch - wo
def test_pool_tiles_read_each_window_from_what_was_computed(ho: int, wo: int, extra: int) -> None:
    """Replay the tiles: every pooled output is stored once, from the four grid positions of
    its window, each computed into the slot by a call of the same tile; no call computes more
    than a tile, nor writes past its half of the slot."""
    pitch = wo + extra
    calls, call_ptr, psegs, pseg_ptr = _pool_tiles(ho, wo, pitch)
    stored = np.zeros((ho // 2) * (wo // 2), dtype=int)
    for t in range(len(call_ptr) - 1):
        slot: dict[int, int] = {}  # slot offset -> grid position it holds
        for at, start, n in calls[call_ptr[t] : call_ptr[t + 1]]:
            assert 0 < n <= TILE and at + -(-n // 16) * 16 <= _POOL_SLOT
            assert at in (0, _POOL_ROW)
            slot.update({at + k: start + k for k in range(n)})
        for a, b, off, count in psegs[pseg_ptr[t] : pseg_ptr[t + 1]]:
            assert 0 < count <= TILE // 2 and b + 2 * count + 14 < _POOL_SLOT
            for k in range(count):
                r, c = divmod(off + k, wo // 2)
                top = 2 * r * pitch + 2 * c
                assert [slot.get(a + 2 * k), slot.get(a + 2 * k + 1)] == [top, top + 1]
                below = top + pitch
                assert [slot.get(b + 2 * k), slot.get(b + 2 * k + 1)] == [below, below + 1]
                stored[off + k] += 1
    assert (stored == 1).all()


def test_pool_only_for_convolutions() -> None:
    with pytest.raises(PruneflowError, match="only a convolution"):
        build_layer("csr_numba", nn.Linear(4, 4), pool=True)


class _Net(nn.Module):
    """Convolutions followed by poolings that can and cannot be fused."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.p1 = nn.MaxPool2d(2)  # after BN and ReLU: fused
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.p2 = nn.MaxPool2d(2)  # the conv's output also feeds the residual: not fused
        self.c3 = nn.Conv2d(8, 8, 1)
        self.p3 = nn.MaxPool2d(3, stride=1)  # not 2x2: not fused
        self.c4 = nn.Conv2d(8, 8, 3, padding=1)
        self.p4 = nn.MaxPool2d(kernel_size=(2, 2), stride=2)  # fused (a tuple kernel size)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.p1(torch.relu(self.b1(self.c1(x))))
        y = self.c2(x)
        x = self.p2(y) + self.p2(y * 0.5)
        x = self.p3(self.c3(x))
        x = self.p4(self.c4(x))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("backend", ["direct_numba", "csr_numba", "dense"])
def test_runtime_fuses_only_poolings_that_read_only_a_convolution(backend: str) -> None:
    torch.manual_seed(0)
    model = _Net()
    model.b1.running_mean.normal_()
    model.b1.running_var.uniform_(0.5, 2.0)
    model.eval()
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                mod.weight.mul_(torch.rand(mod.weight.shape) > 0.8)
    rt = SparseRuntime(model, backend)
    assert rt.fused_pool == ["c1", "c4"] and rt.fused_relu == ["c1"]
    assert rt.layer("c1").pool and not rt.layer("c2").pool and not rt.layer("c3").pool
    assert rt.describe()["layers"]["c4"]["pool"] is True
    x = torch.randn(2, 3, 21, 22)
    with torch.no_grad():
        torch.testing.assert_close(rt(x), model(x), rtol=1e-4, atol=1e-5)
    unfolded = SparseRuntime(model, backend, fold=False)  # nothing fused without tracing
    assert unfolded.fused_pool == []
    with torch.no_grad():
        torch.testing.assert_close(unfolded(x), model(x), rtol=1e-4, atol=1e-5)


def test_profiler_times_the_units_the_runtime_runs() -> None:
    """The table's conv+pool entries are what the runtime built from it runs: the same layers
    pool in the profile (metadata) and in the runtime, whose output equals the masked model."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 10),
    ).eval()
    settings = ProfileSettings(
        levels=(0.0, 0.5, 0.9), batch_size=4, warmup=0, min_repeats=2, max_repeats=3,
        max_seconds=0.05,
    )  # fmt: skip
    table, meta = profile_model(model, "pooled_cnn", in_shape=(1, 13, 13), settings=settings)
    assert meta["fused_pool"] == ["2", "5"]
    assert set(meta["layers"]) >= {"2", "5"}  # conv+pool units are profiled layers
    masks = {
        n: (torch.rand(model.get_submodule(n).weight.shape) > 0.9).float() for n in ("2", "5", "7")
    }
    rt = SparseRuntime.from_table(model, table, masks=masks)
    assert rt.fused_pool == meta["fused_pool"]
    x = torch.randn(4, 1, 13, 13)
    masked = SparseRuntime(model, "dense", masks=masks)
    with torch.no_grad():
        torch.testing.assert_close(rt(x), masked(x), rtol=1e-4, atol=1e-5)
