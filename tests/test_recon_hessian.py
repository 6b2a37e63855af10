"""Hessian capture: the unfold order matches the weight, running means, low-rank form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.recon import Hessian, capture_hessians


def _energy(h: Hessian, weight: torch.Tensor) -> float:
    """``sum_n ||W X_n||^2`` from H: ``N/2 * tr(W H W^T)``."""
    w = weight.detach().flatten(1).double()
    return float(h.n_images / 2 * ((w @ h.dense()) * w).sum())


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=2, bias=True),
        nn.Conv2d(3, 4, (2, 3), padding="same", padding_mode="reflect"),
        nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(0, 1), padding_mode="circular"),
        nn.Conv2d(3, 2, 1, padding="valid"),
    ],
)
def test_conv_hessian_reproduces_output_energy(conv: nn.Conv2d) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(conv).double()
    xs = [torch.randn(5, 3, 9, 8, dtype=torch.float64) for _ in range(3)]
    h = capture_hessians(model, ["0"], xs, progress=False)["0"]
    assert h.n_images == 15 and h.dim == conv.weight[0].numel()
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    with torch.no_grad():
        target = sum(float((conv(x) - bias.view(1, -1, 1, 1)).square().sum()) for x in xs)
    assert _energy(h, conv.weight) == pytest.approx(target, rel=1e-10)


def test_linear_rows_running_mean_and_low_rank_agree() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 3))
    batches = [torch.randn(n, 2, 6) for n in (4, 1, 7)]  # [N, T, d]: T rows per sample
    dense = capture_hessians(model, ["0"], batches, low_rank=0, progress=False)["0"]
    factor = capture_hessians(model, ["0"], batches, low_rank=10_000, progress=False)["0"]
    assert dense.matrix is not None and factor.low_rank and dense.n_images == 12
    x = torch.cat(batches).reshape(-1, 6).double()
    expected = 2 / 12 * x.T @ x
    torch.testing.assert_close(dense.dense(), expected)
    torch.testing.assert_close(factor.dense(), expected)
    # auto: switches to dense once the rows exceed dim // 2 = 3
    auto = capture_hessians(model, ["0"], batches, progress=False)["0"]
    assert auto.matrix is not None
    torch.testing.assert_close(auto.dense(), expected)
    again = Hessian.from_tensors(factor.to_tensors())
    torch.testing.assert_close(again.dense(), expected)


def test_capture_restores_mode_and_refuses_bad_layers() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2)).train()
    with pytest.raises(PruneflowError, match="'0' is a grouped convolution"):
        capture_hessians(model, ["0"], [torch.randn(2, 4, 3, 3)], progress=False)
    with pytest.raises(PruneflowError, match="no layer 'nope'"):
        capture_hessians(model, ["nope"], [torch.randn(2, 4, 3, 3)], progress=False)
    with pytest.raises(PruneflowError, match="only Conv2d and Linear"):
        capture_hessians(model, ["1"], [torch.randn(2, 4, 3, 3)], progress=False)
    hs = capture_hessians(model, ["2"], [(torch.randn(2, 4, 3, 3), torch.zeros(2))], progress=False)
    assert model.training and hs["2"].n_images == 2
    with pytest.raises(PruneflowError, match="no calibration batch"):
        capture_hessians(model, ["2"], [], progress=False)
