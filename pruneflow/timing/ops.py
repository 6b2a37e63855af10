"""Faster equivalents of non-prunable ops, swapped in by the runtime.

They belong to every profile's fixed remainder, which caps the reachable speedup: in smallcnn
at batch 16, torch's NCHW ``max_pool2d`` (single thread) took 6.6 of the 30 ms dense forward
pass, more than any layer but one. The same 2x2 pooling as two element-wise maxima over
strided views is 10-17x faster and gives identical results.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MaxPool2x2", "is_plain_2x2", "max_pool_2x2", "swap_fast_ops"]


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` (stride 2, no padding, floor mode) as two element-wise maxima."""
    n, c, h, w = x.shape
    x = x[:, :, : h - h % 2, : w - w % 2]  # floor mode drops an odd last row/column
    v = x.reshape(n, c, h // 2, 2, w // 2, 2)
    rows = torch.maximum(v[:, :, :, 0], v[:, :, :, 1])
    return torch.maximum(rows[..., 0], rows[..., 1])


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` (stride 2, no padding, floor mode) as two element-wise maxima."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool_2x2(x)


def is_plain_2x2(m: nn.Module) -> bool:
    """Whether ``m`` is a 2x2 max pooling of stride 2 without padding (or already swapped)."""
    if type(m) is MaxPool2x2:
        return True

    def pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    return (
        type(m) is nn.MaxPool2d
        and pair(m.kernel_size) == (2, 2)
        and pair(m.stride) == (2, 2)
        and pair(m.padding) == (0, 0)
        and pair(m.dilation) == (1, 1)
        and not m.ceil_mode
        and not m.return_indices
    )


def swap_fast_ops(model: nn.Module) -> list[str]:
    """Replace (in place) the modules that have a faster equivalent; return their names."""
    swapped = []
    for name, mod in list(model.named_modules()):
        if name and type(mod) is nn.MaxPool2d and is_plain_2x2(mod):
            parent_name, _, leaf = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, leaf, MaxPool2x2())
            swapped.append(name)
    return swapped
