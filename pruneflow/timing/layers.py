"""Executable inference layers: one Conv2d/Linear run by one backend.

Every backend builds one of these from a (BN-folded, already masked) ``nn.Conv2d`` or
``nn.Linear`` and an optional fused ReLU. They are eval-only (no autograd) and not re-entrant
(sparse layers keep scratch buffers per input geometry).

Layout contract, the same for every backend so that a layer's cost does not depend on which
backend its neighbours use (the profiler times layers alone and adds them up):

- conv layers take NCHW input of any strides and return a contiguous NCHW tensor;
- linear layers take a 2-D ``[B, in]`` input of any strides. With ``feature_major=True``
  they return the transpose of a contiguous ``[out, B]`` buffer (a ``[B, out]`` view with
  strides ``(1, B)``): a following linear layer then reads its operand ``X^T`` without a
  copy. :class:`~pruneflow.timing.runtime.SparseRuntime` sets it only where every consumer
  is another linear layer; otherwise the output is a contiguous ``[B, out]`` tensor.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.timing import kernels

_L2_FLOATS = 96 * 1024  # operand floats per column block: ~384 KiB, within a 512 KiB+ L2
_L1_FLOATS = 8 * 1024  # operand floats per column chunk: 32 KiB, an L1 data cache
_MIN_CHUNK_NNZ = 8  # nonzeros per row and chunk that pay for a partial-sum round trip


def weight_sparsity(weight: torch.Tensor) -> float:
    """Fraction of exact zeros in ``weight``."""
    numel = weight.numel()
    return 1.0 - int(torch.count_nonzero(weight.detach())) / numel if numel else 0.0


class ExecLayer(nn.Module):
    """Base class: the layer's identity, its sparsity and its fused activation."""

    backend = "?"

    def __init__(self, layer: nn.Module, relu: bool):
        super().__init__()
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise PruneflowError(f"cannot execute a {type(layer).__name__}: Conv2d/Linear only")
        weight = layer.weight.detach()
        self.op = "conv2d" if isinstance(layer, nn.Conv2d) else "linear"
        self.relu = bool(relu)
        self.feature_major = False
        self.out_channels = int(weight.shape[0])
        self.sparsity = weight_sparsity(weight)
        if self.op == "conv2d":
            self.stride = tuple(layer.stride)
            self.padding = tuple(layer.padding)
            self.dilation = tuple(layer.dilation)
            self.groups = int(layer.groups)
            self.kernel_size = tuple(layer.kernel_size)

    def extra_repr(self) -> str:
        return f"{self.op}, backend={self.backend}, sparsity={self.sparsity:.4f}, relu={self.relu}"

    def _finish_linear(self, y_fm: torch.Tensor) -> torch.Tensor:
        """Return a feature-major ``[out, B]`` result in the layout the contract asks for."""
        return y_fm.t() if self.feature_major else y_fm.t().contiguous()


def _to_csr(weight2d: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and tested here
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return weight2d.detach().to(torch.float32).to_sparse_csr()


def _bias_of(layer: nn.Module) -> torch.Tensor:
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
        self.bias = nn.Parameter(_bias_of(layer), requires_grad=False)

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

    def __init__(self, layer: nn.Conv2d, relu: bool = False):
        super().__init__(layer, relu)
        self.weight = nn.Parameter(layer.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(_bias_of(layer), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        return torch.relu_(y) if self.relu else y


class TorchCsrLinear(ExecLayer):
    """torch sparse CSR weight times the dense ``X^T``."""

    backend = "csr"

    def __init__(self, layer: nn.Linear, relu: bool = False):
        super().__init__(layer, relu)
        self.weight_csr = _to_csr(layer.weight)
        self.bias_col = _bias_of(layer)[:, None].contiguous()

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

    def __init__(self, layer: nn.Conv2d, relu: bool = False):
        super().__init__(layer, relu)
        self.weight_csr = _to_csr(layer.weight.reshape(layer.weight.shape[0], -1))
        self.bias4 = _bias_of(layer).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ho, wo = _out_size(h, w, self.kernel_size, self.stride, self.padding, self.dilation)
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # [C*kh*kw, N*L]
        y = torch.sparse.mm(self.weight_csr, cols)
        out = y.view(self.out_channels, n, ho, wo).permute(1, 0, 2, 3).contiguous()
        out += self.bias4
        return torch.relu_(out) if self.relu else out


def _out_size(
    h: int, w: int, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int],
    d: tuple[int, int],
) -> tuple[int, int]:
    ho = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    if ho < 1 or wo < 1:
        raise PruneflowError(f"input {h}x{w} is too small for a {k[0]}x{k[1]} convolution")
    return ho, wo


def _check_f32(x: torch.Tensor) -> None:
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise PruneflowError(
            f"csr_numba layers run float32 CPU tensors, got {x.dtype} on {x.device}"
        )


def _csr(weight2d: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, column indices, values)`` of the nonzeros, rows in order, columns ascending."""
    w = weight2d.detach().to(torch.float32).cpu().numpy()
    rows, cols = np.nonzero(w)
    indptr = np.zeros(w.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=w.shape[0]), out=indptr[1:])
    return indptr, cols.astype(np.int64), np.ascontiguousarray(w[rows, cols], dtype=np.float32)


def _column_chunks(
    indptr: np.ndarray, cols: np.ndarray, ncols: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Regroup CSR nonzeros by column chunk: ``([chunks, R + 1] pointers, permutation)``.

    A chunk's operand rows (``chunk x width`` floats) fit in L1, so every output row reads
    them from L1 instead of L2: 1.3-1.4x faster at 50-90% sparsity on a 1024x1024 layer at
    batch 64. Chunks are widened where a row would get too few nonzeros per chunk to pay for
    its partial sums' round trip (very sparse layers end up with a single chunk).
    """
    nrows, nnz = len(indptr) - 1, len(cols)
    density = nnz / max(nrows * ncols, 1)
    size = max(_L1_FLOATS // max(width, 1), math.ceil(_MIN_CHUNK_NNZ / max(density, 1e-9)))
    if size >= ncols:
        return indptr[None, :].copy(), np.arange(nnz)
    chunk = cols // size
    rows = np.repeat(np.arange(nrows), np.diff(indptr))
    order = np.lexsort((cols, rows, chunk))
    nchunks = int(math.ceil(ncols / size))
    counts = np.bincount(chunk * nrows + rows, minlength=nchunks * nrows).reshape(nchunks, -1)
    ptrs = np.zeros((nchunks, nrows + 1), dtype=np.int64)
    np.cumsum(counts, axis=1, out=ptrs[:, 1:])
    ptrs += np.concatenate([[0], np.cumsum(counts.sum(axis=1))[:-1]])[:, None]
    return ptrs, order


def _offsets(flat: np.ndarray) -> np.ndarray:
    # int32 halves the index bytes streamed per nonzero; fall back for huge operands
    dtype = np.int32 if flat.size == 0 or flat.max() < 2**31 else np.int64
    return np.ascontiguousarray(flat, dtype=dtype)


def _blocks(ly: int, operand_rows: int, reach: int, nrows: int) -> tuple[int, int]:
    """Column block (whole tiles whose operand slice stays in L2) and row block.

    One thread takes all rows of a column block in turn, so the block's operand slice is
    read from memory once. With more threads, rows are split too, so that there are at least
    four work items per thread even when there is a single column block (a linear layer).
    """
    tile = kernels.TILE
    cols = max(tile, ((_L2_FLOATS // max(operand_rows, 1)) - reach) // tile * tile)
    col_block = max(1, min(cols, ly))
    threads = int(numba.get_num_threads())
    if threads <= 1:
        return col_block, max(nrows, 1)
    ncb = max(1, math.ceil(ly / col_block))
    nrb = max(1, math.ceil(4 * threads / ncb))
    return col_block, max(1, math.ceil(nrows / nrb))


class NumbaCsrLinear(ExecLayer):
    """CSR weight, numba register-tiled kernel over ``X^T`` (batch = SIMD dimension)."""

    backend = "csr_numba"

    def __init__(self, layer: nn.Linear, relu: bool = False):
        super().__init__(layer, relu)
        self.indptr, self.cols, self.vals = _csr(layer.weight)
        self.in_features = int(layer.weight.shape[1])
        self.bias_np = _bias_of(layer).numpy()
        self._geo: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}

    def _geometry(self, batch: int) -> tuple[np.ndarray, ...]:
        threads = int(numba.get_num_threads())
        key = (batch, threads)
        if key not in self._geo:
            cb, rb = _blocks(batch, self.in_features, 0, self.out_channels)
            ptrs, order = _column_chunks(self.indptr, self.cols, self.in_features,
                                         min(cb, batch))
            offs = _offsets(self.cols[order] * batch)
            vals = np.ascontiguousarray(self.vals[order])
            self._geo[key] = (ptrs, vals, offs, cb, rb)
        return self._geo[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_f32(x)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        xt = x2.t()
        if not xt.is_contiguous():
            xt = xt.contiguous()
        batch = int(xt.shape[1])
        y = torch.empty(self.out_channels, batch, dtype=torch.float32)
        ptrs, vals, offs, cb, rb = self._geometry(batch)
        lo = np.float32(0.0 if self.relu else -np.inf)
        kernels.spmm(ptrs, vals, offs, xt.numpy().reshape(-1), y.numpy().reshape(-1),
                     batch, self.bias_np, lo, cb, rb)
        if x.dim() != 2:
            return y.t().reshape(*lead, -1)
        return self._finish_linear(y)


@dataclass
class _ConvGeometry:
    """Per input shape: operand layout, nonzero offsets, work split and scratch buffers."""

    padded: torch.Tensor  # zero-padded input; border written once, interior every call
    pack_dims: tuple[int, ...]  # permutation of the NCHW input matching ``padded``'s interior
    cols: torch.Tensor | None  # im2col operand for strided convs, else None
    cols_src: tuple[tuple[int, ...], ...] | None  # im2col: size, source and target strides
    grid: torch.Tensor  # [C_out, ly] kernel output (bias and ReLU applied)
    grid_view: tuple[tuple[int, ...], tuple[int, ...]]  # the NCHW as_strided view of ``grid``
    ly: int
    offs: np.ndarray
    col_block: int
    row_block: int


# Above this ratio of padded to output pixels, the padded-NCHW grid wastes too many lanes on
# junk columns (7x7 maps: 1.65x) and the batch-innermost layout wins despite its transposing
# copies; below it (28x28 and up: <= 1.15x) the cheaper plain copies win.
_GRID_WASTE_LIMIT = 1.25


class NumbaCsrConv(ExecLayer):
    """CSR weight, numba kernel over shifted rows of the padded input (no im2col at stride 1).

    Per call: one strided copy of the NCHW input into a zero-padded operand, the kernel (bias
    and ReLU fused), one strided copy of the kernel's output grid to NCHW. Stride-1 operands
    are ``[C, N, Hp, Wp]`` for large maps and ``[C, Hp, Wp, N]`` for small ones (the batch as
    SIMD dimension: no junk rows between images, and vector loads stay 64-byte aligned when
    N is a multiple of 16). Strided convolutions gather an im2col matrix first.
    """

    backend = "csr_numba"

    def __init__(self, layer: nn.Conv2d, relu: bool = False):
        super().__init__(layer, relu)
        if self.groups != 1:
            raise PruneflowError("csr_numba runs convolutions with groups=1 only")
        w = layer.weight.detach()
        self.in_channels = int(w.shape[1])
        self.indptr, self.cols, self.vals = _csr(w.reshape(w.shape[0], -1))
        kh, kw = self.kernel_size
        self.tap_c = self.cols // (kh * kw)
        self.tap_i = (self.cols // kw) % kh
        self.tap_j = self.cols % kw
        self.bias_np = _bias_of(layer).numpy()
        self._geo: dict[tuple[int, ...], _ConvGeometry] = {}

    def _geometry(self, n: int, h: int, w: int) -> _ConvGeometry:
        threads = int(numba.get_num_threads())
        key = (n, h, w, threads)
        if key in self._geo:
            return self._geo[key]
        c, co = self.in_channels, self.out_channels
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            self.kernel_size, self.stride, self.padding, self.dilation)
        ho, wo = _out_size(h, w, self.kernel_size, self.stride, self.padding, self.dilation)
        hp, wp = h + 2 * ph, w + 2 * pw
        plane = n * hp * wp
        cols = cols_src = None
        if (sh, sw) != (1, 1):
            padded, pack_dims = torch.zeros(c, n, hp, wp), (1, 0, 2, 3)
            rows, reach, ly = c * kh * kw, 0, n * ho * wo
            pitch = -(-ly // kernels.LANES) * kernels.LANES  # aligned operand rows
            cols = torch.empty(rows, pitch)
            cols_src = (
                (c, kh, kw, n, ho, wo),
                (plane, dh * wp, dw, hp * wp, sh * wp, sw),
                (kh * kw * pitch, kw * pitch, pitch, ho * wo, wo, 1),
            )
            offs = _offsets(self.cols * pitch)
            grid_view = ((n, co, ho, wo), (ho * wo, ly, wo, 1))
        elif hp * wp > _GRID_WASTE_LIMIT * ho * wo:
            padded, pack_dims = torch.zeros(c, hp, wp, n), (1, 2, 3, 0)
            rows, reach = c, ((kh - 1) * dh * wp + (kw - 1) * dw) * n
            ly = plane - reach  # the last valid output reads the operand's last element
            offs = _offsets(self.tap_c * plane + (self.tap_i * dh * wp + self.tap_j * dw) * n)
            grid_view = ((n, co, ho, wo), (1, ly, wp * n, n))
        else:
            padded, pack_dims = torch.zeros(c, n, hp, wp), (1, 0, 2, 3)
            rows, reach = c, (kh - 1) * dh * wp + (kw - 1) * dw
            ly = plane - reach
            offs = _offsets(self.tap_c * plane + self.tap_i * dh * wp + self.tap_j * dw)
            grid_view = ((n, co, ho, wo), (hp * wp, ly, wp, 1))
        cb, rb = _blocks(ly, rows, reach, co)
        geo = _ConvGeometry(
            padded=padded, pack_dims=pack_dims, cols=cols, cols_src=cols_src,
            grid=torch.empty(co, ly), grid_view=grid_view, ly=ly, offs=offs,
            col_block=cb, row_block=rb,
        )
        self._geo[key] = geo
        return geo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise PruneflowError(f"conv2d expects NCHW input, got shape {tuple(x.shape)}")
        _check_f32(x)
        n, _, h, w = (int(v) for v in x.shape)
        geo = self._geometry(n, h, w)
        ph, pw = self.padding
        if geo.pack_dims == (1, 0, 2, 3):
            interior = geo.padded[:, :, ph:ph + h, pw:pw + w]
        else:
            interior = geo.padded[:, ph:ph + h, pw:pw + w, :]
        interior.copy_(x.permute(*geo.pack_dims))
        if geo.cols is None:
            operand = geo.padded
        else:
            size, src_stride, dst_stride = geo.cols_src
            torch.as_strided(geo.cols, size, dst_stride).copy_(
                torch.as_strided(geo.padded, size, src_stride))
            operand = geo.cols
        lo = np.float32(0.0 if self.relu else -np.inf)
        kernels.spmm(self.indptr[None, :], self.vals, geo.offs, operand.numpy().reshape(-1),
                     geo.grid.numpy().reshape(-1), geo.ly, self.bias_np, lo,
                     geo.col_block, geo.row_block)
        size, stride = geo.grid_view
        return torch.as_strided(geo.grid, size, stride).contiguous()
