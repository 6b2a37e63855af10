"""The direct sparse convolution equals the masked dense layer on every path it has, and the
layers it cannot run fall back to another backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.timing import SparseRuntime, build_layer, direct_conv, get_backend, thread_scope
from pruneflow.timing.direct_conv import DirectSparseConv, _row_segments, direct_supports
from pruneflow.timing.kernels import LANES, TILE


def _pruned(layer: nn.Conv2d, sparsity: float, seed: int = 0, empty_rows: int = 1) -> nn.Conv2d:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(layer.weight.shape, generator=gen) >= sparsity)
        layer.weight[:empty_rows] = 0.0  # fully pruned output channels: bias (and ReLU) only
        if layer.bias is not None:
            layer.bias.normal_(generator=gen)
    return layer


def _check(layer: nn.Conv2d, x: torch.Tensor) -> None:
    for relu in (False, True):
        exe = build_layer("direct_numba", layer, relu=relu)
        with torch.no_grad():
            ref = layer(x)
            ref = torch.relu(ref) if relu else ref
            y = exe(x)
            again = exe(x.clone())  # a second call reuses the cached operand buffer
        assert y.is_contiguous() and y.shape == ref.shape
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(again, ref, rtol=1e-5, atol=1e-5)


SPECS = [
    dict(kernel_size=3, padding=1),  # stride 1, padded operand
    dict(kernel_size=3, padding=1, stride=2, bias=False),  # phase-split operand
    dict(kernel_size=1),  # the input itself is the operand: no copy
    dict(kernel_size=1, stride=2),  # resnet's downsampling shortcut
    dict(kernel_size=3, padding=0),  # valid convolution: output narrower than the pitch
    dict(kernel_size=(3, 5), padding=(0, 1)),  # rectangular kernel, uneven padding
    dict(kernel_size=7, stride=2, padding=3),  # resnet's stem
    dict(kernel_size=2, stride=2),  # even kernel
    dict(kernel_size=3, padding=2),  # more padding than the kernel needs
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: str(sorted(s.items())))
@pytest.mark.parametrize("hw", [(13, 11), (7, 7), (4, 5)])  # odd, several tiles, a tile tail
@pytest.mark.parametrize("batch", [1, 3])
def test_direct_conv_equals_the_masked_dense_layer(spec: dict, hw: tuple, batch: int) -> None:
    layer = _pruned(nn.Conv2d(5, 9, **spec), 0.7, seed=batch)
    _check(layer, torch.randn(batch, 5, *hw, generator=torch.Generator().manual_seed(batch)))


@pytest.mark.parametrize("sparsity", [0.0, 0.9, 0.99, 1.0])
def test_direct_conv_at_every_density(sparsity: float) -> None:
    # wide maps: many 64-float tiles per plane, rows split across tiles
    layer = _pruned(nn.Conv2d(8, 6, 3, padding=1), sparsity, seed=3, empty_rows=0)
    _check(layer, torch.randn(2, 8, 30, 29))


def test_direct_conv_single_pixel_and_non_contiguous_input() -> None:
    _check(_pruned(nn.Conv2d(4, 3, 1), 0.5), torch.randn(2, 4, 1, 1))
    layer = _pruned(nn.Conv2d(4, 6, 3, padding=1, stride=2), 0.5)
    x = torch.randn(2, 9, 9, 4).permute(0, 3, 1, 2)  # channels-last memory
    exe = build_layer("direct_numba", layer, relu=True)
    with torch.no_grad():
        torch.testing.assert_close(exe(x), torch.relu(layer(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("batch", "channels", "hw"),
    [(4, 32, (28, 28)), (1, 96, (14, 13)), (3, 64, (9, 31))],
    ids=["28x28", "batch1-14x13", "9x31"],
)
@pytest.mark.parametrize("aligned", [None, True], ids=["auto", "aligned"])
def test_direct_conv_on_two_threads_equals_one(
    batch: int, channels: int, hw: tuple, aligned: bool | None
) -> None:
    # large enough that the parallel kernel runs (above the fork/join threshold); the tiles of
    # a plane are split over work items, rows across tiles; aligned: a scratch row per thread
    layer = _pruned(nn.Conv2d(channels, channels, 3, padding=1), 0.5)
    x = torch.randn(batch, channels, *hw)
    exe = DirectSparseConv(layer, relu=True, aligned=aligned)
    with torch.no_grad():
        ref = torch.relu(layer(x))
        with thread_scope(2):
            y2 = exe(x)
            assert next(g for k, g in exe._geo.items() if k[-1] == 2).parallel
        with thread_scope(1):
            y1 = exe(x)
    torch.testing.assert_close(y2, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y1, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(4, 8, 3, groups=2),
        nn.Conv2d(4, 8, 3, padding=2, dilation=2),
        nn.Conv2d(4, 8, 3, stride=3),
        nn.Conv2d(4, 8, 3, stride=(1, 2)),
        nn.Conv2d(4, 8, 3, padding="same"),
        nn.Conv2d(4, 8, 3, padding=1, padding_mode="reflect"),
        nn.Linear(4, 4),
    ],
    ids=repr,
)
def test_direct_conv_refuses_what_it_cannot_run(layer: nn.Module) -> None:
    assert not direct_supports(layer)
    assert not get_backend("direct_numba").supports(layer)
    with pytest.raises(PruneflowError, match="cannot run"):
        build_layer("direct_numba", layer)


def test_runtime_falls_back_to_the_next_backend() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),  # csr_numba runs it
        nn.Conv2d(8, 8, 3, padding=1, groups=2),  # only dense runs it
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),  # csr_numba runs it
    ).eval()
    for mod in model:
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                mod.weight.mul_(torch.rand(mod.weight.shape) > 0.8)
    rt = SparseRuntime(model, "direct_numba")
    assert rt.backends == {"0": "direct_numba", "2": "csr_numba", "3": "dense", "5": "csr_numba"}
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(rt(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_direct_conv_in_input_channel_chunks(stride: int) -> None:
    # enough input channels that the nonzeros are split into L1-sized chunks (partial sums)
    layer = _pruned(nn.Conv2d(160, 7, 3, padding=1, stride=stride), 0.5, empty_rows=2)
    x = torch.randn(2, 160, 14, 13)
    _check(layer, x)
    assert build_layer("direct_numba", layer)._geometry(2, 14, 13).ptrs.shape[0] > 1


@pytest.mark.parametrize("wo", [1, 5, 7, 14, 28, 60, 64, 70])
@pytest.mark.parametrize("extra", [0, 2, 6])  # pitch - wo: junk columns per row
@pytest.mark.parametrize("tile_block", [1, 2, 1000])
def test_rounded_stores_are_overwritten_by_the_same_work_item(
    wo: int, extra: int, tile_block: int
) -> None:
    """Replay each work item's stores in kernel order: a store past its run (rounded up to
    whole vectors) must land inside the plane on a position the same item stores exactly
    later, so that no item leaves a wrong value or races another item's exact store."""
    pitch, ho = wo + extra, 5
    length = (ho - 1) * pitch + wo
    tiles = -(-length // TILE)
    segs, ptr = _row_segments(length, pitch, wo, tiles, tile_block)
    assert (segs[:, 3] >= segs[:, 2]).all() and (segs[:, 3] <= TILE).all()
    exact_cover = np.zeros(ho * wo, dtype=int)
    for block in range(0, tiles, tile_block):
        out: dict[int, int] = {}
        for t in range(block, min(block + tile_block, tiles)):
            for start, off, run, stored in segs[ptr[t] : ptr[t + 1]]:
                assert 0 <= off and off + stored <= ho * wo
                for k in range(stored):
                    out[off + k] = t * TILE + start + k  # the grid position it came from
                exact_cover[off : off + run] += 1
        for pos, src in out.items():
            assert src == pos // wo * pitch + pos % wo, (pos, src)
    assert (exact_cover == 1).all()  # every output once, from its own grid position


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: str(sorted(s.items())))
@pytest.mark.parametrize("hw", [(13, 11), (4, 5)])
def test_the_aligned_layout_equals_the_masked_dense_layer(spec: dict, hw: tuple) -> None:
    # forced on: shifted copies of every image's operand, whatever the rows' widening costs
    layer = _pruned(nn.Conv2d(5, 9, **spec), 0.7, seed=1)
    x = torch.randn(3, 5, *hw, generator=torch.Generator().manual_seed(1))
    for relu, pool in ((False, False), (True, False), (True, True)):
        exe = DirectSparseConv(layer, relu=relu, pool=pool, aligned=True)
        with torch.no_grad():
            ref = torch.relu(layer(x)) if relu else layer(x)
            ref = torch.nn.functional.max_pool2d(ref, 2) if pool else ref
            if ref.numel() == 0:
                continue
            y, again = exe(x), exe(x.clone())
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(again, ref, rtol=1e-5, atol=1e-5)


def _assert_aligned(geo) -> None:
    # every nonzero's operand row starts on a vector boundary of its copy, rows 64-byte aligned
    assert (geo.offs % LANES == 0).all() and geo.scratch.ctypes.data % (4 * LANES) == 0
    assert geo.scratch.shape[1] % LANES == 0


def test_the_aligned_layout_where_it_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_conv, "_WIDE_VECTORS", True)  # the rule, whatever this host has
    exe = DirectSparseConv(_pruned(nn.Conv2d(4, 6, 3, padding=1), 0.5))
    for hw in ((14, 14), (28, 28)):  # rows of 16 floats already, 30 widened to 32
        geo = exe._geometry(2, *hw)
        assert geo.shifts.tolist() == [0, 1, 2] and geo.pitch % LANES == 0
        _assert_aligned(geo)
    # 7x7 maps: rows widened to 16 floats would be 1.7x the work, rows of 8 that share their
    # padding column with the next row's are not (copies shifted by 0-2 and 8-10 floats)
    wide = DirectSparseConv(_pruned(nn.Conv2d(32, 16, 3, padding=1), 0.5))
    geo = wide._geometry(2, 7, 7)
    assert geo.pitch == 8 and geo.shifts.tolist() == [0, 1, 2, 8, 9, 10]
    _assert_aligned(geo)
    assert exe._geometry(2, 7, 7).shifts.size == 0  # 4 input channels: too little work
    assert DirectSparseConv(nn.Conv2d(4, 6, 1))._geometry(2, 14, 14).shifts.size == 0
    off = DirectSparseConv(nn.Conv2d(4, 6, 3, padding=1), aligned=False)
    assert off._geometry(2, 14, 14).shifts.size == 0
    # too few nonzeros to pay for copying every image three times
    sparse = DirectSparseConv(_pruned(nn.Conv2d(64, 64, 3, padding=1), 0.99, empty_rows=0))
    assert sparse._geometry(2, 14, 14).shifts.size == 0
    # 32-byte vectors: never (unless asked for)
    monkeypatch.setattr(direct_conv, "_WIDE_VECTORS", False)
    avx2 = DirectSparseConv(_pruned(nn.Conv2d(4, 6, 3, padding=1), 0.5))
    assert avx2._geometry(2, 14, 14).shifts.size == 0
    forced = DirectSparseConv(_pruned(nn.Conv2d(4, 6, 3, padding=1), 0.5), aligned=True)
    assert forced._geometry(2, 14, 14).shifts.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("spec", "hw"),
    [
        (dict(kernel_size=3, padding=1), (7, 7)),
        (dict(kernel_size=3, padding=2), (6, 6)),
        (dict(kernel_size=(3, 5), padding=(1, 2)), (5, 10)),
        (dict(kernel_size=3, padding=(0, 1)), (6, 7)),
    ],
    ids=str,
)
def test_rows_sharing_their_padding_equal_the_masked_dense_layer(
    spec: dict, hw: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the shared-padding grid wherever rows are not widened: a read past a row's end lands on
    # the next row's left padding, the last row's on the plane's extra row
    monkeypatch.setattr(direct_conv, "_WIDE_VECTORS", True)
    monkeypatch.setattr(direct_conv, "_MAX_ALIGN_WASTE", 1.0)
    monkeypatch.setattr(direct_conv, "_MIN_WORK_PER_COPIED", 0.0)
    layer = _pruned(nn.Conv2d(6, 5, **spec), 0.6, seed=2)
    x = torch.randn(3, 6, *hw, generator=torch.Generator().manual_seed(2))
    for relu, pool in ((False, False), (True, True)):
        exe = DirectSparseConv(layer, relu=relu, pool=pool)
        geo = exe._geometry(3, *hw)
        assert geo.pitch == hw[1] + layer.padding[1] and geo.shifts.size > 1
        _assert_aligned(geo)
        with torch.no_grad():
            ref = torch.relu(layer(x)) if relu else layer(x)
            ref = torch.nn.functional.max_pool2d(ref, 2) if pool else ref
            y, again = exe(x), exe(x.clone())
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(again, ref, rtol=1e-5, atol=1e-5)
