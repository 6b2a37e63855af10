"""Executable inference layers: one Conv2d/Linear run by one backend.

Every backend builds one of these from a (BN-folded, already masked) ``nn.Conv2d`` or
``nn.Linear`` and an optional fused ReLU. They are eval-only (no autograd) and not re-entrant
(sparse layers keep scratch buffers per input geometry).

Layout contract, the same for every backend so that a layer's cost does not depend on which
backend its neighbours use (the profiler adds up layer times measured in one configuration
to predict another):

- conv layers take NCHW input of any strides and return a contiguous NCHW tensor; one built
  with ``pool=True`` returns the 2x2 max pooling (stride 2, floor mode) of its activated
  output: the runtime fuses a 2x2 ``MaxPool2d`` that is a convolution's only consumer into it,
  so that a backend able to pool in its store (``direct_numba``) writes a quarter of the
  output; the others pool after the layer. A ``direct_numba`` convolution whose output only
  the next ``direct_numba`` convolution reads (``next_layer``, set by the runtime) returns a
  view of that layer's zero-padded operand, written in place: the consumer has no copy to
  make;
- linear layers take a 2-D ``[B, in]`` input of any strides. With ``feature_major=True``
  they return the transpose of a contiguous ``[out, B]`` buffer (a ``[B, out]`` view with
  strides ``(1, B)``): a following linear layer then reads its operand ``X^T`` without a
  copy. :class:`~pruneflow.timing.runtime.SparseRuntime` sets it only where every consumer
  is another linear layer; otherwise the output is a contiguous ``[B, out]`` tensor.

This module holds the contract, the dense and the torch-CSR layers;
:mod:`pruneflow.timing.numba_layers` the ``csr_numba`` ones.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.timing.ops import max_pool_2x2


def weight_sparsity(weight: torch.Tensor) -> float:
    """Fraction of exact zeros in ``weight``."""
    numel = weight.numel()
    return 1.0 - int(torch.count_nonzero(weight.detach())) / numel if numel else 0.0


class ExecLayer(nn.Module):
    """Base class: the layer's identity, its sparsity and its fused activation."""

    backend = "?"
    # whether the class pools in its own kernel; else ``_pooled`` pools its finished output
    fuses_pool = False

    def __init__(self, layer: nn.Module, relu: bool, pool: bool = False):
        super().__init__()
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise PruneflowError(f"cannot execute a {type(layer).__name__}: Conv2d/Linear only")
        weight = layer.weight.detach()
        self.op = "conv2d" if isinstance(layer, nn.Conv2d) else "linear"
        self.relu = bool(relu)
        self.pool = bool(pool)
        if self.pool and self.op != "conv2d":
            raise PruneflowError("only a convolution can fuse the max pooling after it")
        self.feature_major = False
        # (root module, name) of the convolution that alone reads this one's output, set by
        # the runtime: a backend may write its output straight into that layer's operand
        self.next_layer: tuple[nn.Module, str] | None = None
        self.out_channels = int(weight.shape[0])
        self.sparsity = weight_sparsity(weight)
        if self.op == "conv2d":
            self.stride = tuple(layer.stride)
            self.padding = tuple(layer.padding)
            self.dilation = tuple(layer.dilation)
            self.groups = int(layer.groups)
            self.kernel_size = tuple(layer.kernel_size)

    def extra_repr(self) -> str:
        pool = ", pool=2x2" if self.pool else ""
        return (
            f"{self.op}, backend={self.backend}, sparsity={self.sparsity:.4f}, "
            f"relu={self.relu}{pool}"
        )

    def _pooled(self, y: torch.Tensor) -> torch.Tensor:
        """The fused 2x2 max pooling of a convolution's output (``y`` itself without one)."""
        return max_pool_2x2(y) if self.pool else y

    def _finish_linear(self, y_fm: torch.Tensor) -> torch.Tensor:
        """Return a feature-major ``[out, B]`` result in the layout the contract asks for."""
        return y_fm.t() if self.feature_major else y_fm.t().contiguous()


def _to_csr(weight2d: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and tested here
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return weight2d.detach().to(torch.float32).to_sparse_csr()


def bias_of(layer: nn.Module) -> torch.Tensor:
    out = layer.weight.shape[0]
    if layer.bias is None:
        return torch.zeros(out, dtype=torch.float32)
    return layer.bias.detach().to(torch.float32).contiguous().clone()


class DenseLinear(ExecLayer):
    """torch's GEMM, as ``W @ X^T`` whenever either side is feature-major.

    ``F.linear`` on a feature-major input (strides ``(1, B)``) takes a slow path for narrow
    outputs (5x slower for 1024 -> 10 at batch 64), while ``addmm(b, W, X^T)`` is fast for
    every layout; it also yields the feature-major output without a transpose.
    """

    backend = "dense"

    def __init__(self, layer: nn.Linear, relu: bool = False):
        super().__init__(layer, relu)
        self.weight = nn.Parameter(layer.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(bias_of(layer), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or (not self.feature_major and not x.t().is_contiguous()):
            y = F.linear(x, self.weight, self.bias)
            return torch.relu_(y) if self.relu else y
        y = torch.addmm(self.bias[:, None], self.weight, x.t())
        if self.relu:
            torch.relu_(y)
        return self._finish_linear(y)


class DenseConv(ExecLayer):
    """torch's (oneDNN) convolution."""

    backend = "dense"

    def __init__(self, layer: nn.Conv2d, relu: bool = False, pool: bool = False):
        super().__init__(layer, relu, pool)
        self.weight = nn.Parameter(layer.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(bias_of(layer), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
        return self._pooled(torch.relu_(y) if self.relu else y)


class TorchCsrLinear(ExecLayer):
    """torch sparse CSR weight times the dense ``X^T``."""

    backend = "csr"

    def __init__(self, layer: nn.Linear, relu: bool = False):
        super().__init__(layer, relu)
        self.weight_csr = _to_csr(layer.weight)
        self.bias_col = bias_of(layer)[:, None].contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        y = torch.sparse.mm(self.weight_csr, x2.t().contiguous())
        y += self.bias_col
        if self.relu:
            torch.relu_(y)
        if x.dim() != 2:
            return y.t().reshape(*lead, -1)
        return self._finish_linear(y)


class TorchCsrConv(ExecLayer):
    """torch sparse CSR weight times the unfolded (im2col) input."""

    backend = "csr"

    def __init__(self, layer: nn.Conv2d, relu: bool = False, pool: bool = False):
        super().__init__(layer, relu, pool)
        self.weight_csr = _to_csr(layer.weight.reshape(layer.weight.shape[0], -1))
        self.bias4 = bias_of(layer).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ho, wo = conv_out_size(h, w, self.kernel_size, self.stride, self.padding, self.dilation)
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # [C*kh*kw, N*L]
        y = torch.sparse.mm(self.weight_csr, cols)
        out = y.view(self.out_channels, n, ho, wo).permute(1, 0, 2, 3).contiguous()
        out += self.bias4
        return self._pooled(torch.relu_(out) if self.relu else out)


def conv_out_size(
    h: int,
    w: int,
    k: tuple[int, int],
    s: tuple[int, int],
    p: tuple[int, int],
    d: tuple[int, int],
) -> tuple[int, int]:
    ho = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    if ho < 1 or wo < 1:
        raise PruneflowError(f"input {h}x{w} is too small for a {k[0]}x{k[1]} convolution")
    return ho, wo


def check_f32(x: torch.Tensor) -> None:
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise PruneflowError(
            f"csr_numba layers run float32 CPU tensors, got {x.dtype} on {x.device}"
        )
