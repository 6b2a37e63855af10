"""The ``csr_numba`` layers: CSR weights run by the kernel of :mod:`pruneflow.timing.kernels`.

They follow the layout contract of :mod:`pruneflow.timing.layers`. Per input geometry they
cache the nonzeros' operand offsets, the work split and scratch buffers (so a layer object is
not re-entrant). Work split: column blocks sized for L2, and nonzeros grouped in column chunks
sized for L1 (see :func:`_column_chunks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.timing import kernels
from pruneflow.timing.layers import ExecLayer, bias_of, check_f32, conv_out_size

__all__ = ["NumbaCsrConv", "NumbaCsrLinear"]

_L2_FLOATS = 96 * 1024  # operand floats per column block: ~384 KiB, within a 512 KiB+ L2
_L1_FLOATS = 8 * 1024  # operand floats per column chunk: 32 KiB, an L1 data cache
_MIN_CHUNK_NNZ = 16  # nonzeros per row and chunk that pay for a partial-sum round trip
_CONV_CHUNK_BLOCK = 4 * kernels.TILE  # column block of chunked convolutions


def _csr(weight2d: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, column indices, values)`` of the nonzeros, rows in order, columns ascending."""
    w = weight2d.detach().to(torch.float32).cpu().numpy()
    rows, cols = np.nonzero(w)
    indptr = np.zeros(w.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=w.shape[0]), out=indptr[1:])
    return indptr, cols.astype(np.int64), np.ascontiguousarray(w[rows, cols], dtype=np.float32)


def _column_chunks(
    indptr: np.ndarray, cols: np.ndarray, ncols: int, floats_per_column: float
) -> tuple[np.ndarray, np.ndarray]:
    """Regroup CSR nonzeros by column chunk: ``([chunks, R + 1] pointers, permutation)``.

    A chunk's operand rows (``chunk x width`` floats) fit in L1, so every output row reads
    them from L1 instead of L2: 1.3-1.8x faster at 50-90% sparsity on a 1024x1024 layer at
    batch 64. ``floats_per_column``: operand floats one weight column brings into cache per
    column block. Chunks are widened where a row would get too few nonzeros per chunk to pay
    for its partial sums' round trip (very sparse layers end up with a single chunk).
    """
    nrows, nnz = len(indptr) - 1, len(cols)
    density = nnz / max(nrows * ncols, 1)
    size = max(
        int(_L1_FLOATS // max(floats_per_column, 1.0)),
        math.ceil(_MIN_CHUNK_NNZ / max(density, 1e-9)),
    )
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


def _blocks(
    ly: int,
    operand_rows: int,
    reach: int,
    nrows: int,
    threads: int,
    col_block: int | None = None,
) -> tuple[int, int]:
    """Column block (whole tiles whose operand slice stays in L2, or as given) and row block.

    One thread takes all rows of a column block in turn, so the block's operand slice is
    read from memory once. With more threads, rows are split too, so that there are at least
    four work items per thread even when there is a single column block (a linear layer).
    ``threads``: those the kernel runs on (1 where the work stays on the calling thread: split
    rows there only reload each column chunk once per row block, which made mlp1024's 95%
    layers 1.6x slower under two numba threads than under one).
    """
    tile = kernels.TILE
    if col_block is None:
        col_block = max(tile, ((_L2_FLOATS // max(operand_rows, 1)) - reach) // tile * tile)
    col_block = max(1, min(col_block, ly))
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
        self.bias_np = bias_of(layer).numpy()
        self._geo: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}

    def _geometry(self, batch: int) -> tuple[np.ndarray, ...]:
        threads = int(numba.get_num_threads())
        key = (batch, threads)
        if key not in self._geo:
            run_threads = kernels.kernel_threads(threads, len(self.vals) * batch)
            parallel = run_threads > 1
            cb, rb = _blocks(batch, self.in_features, 0, self.out_channels, run_threads)
            ptrs, order = _column_chunks(
                self.indptr, self.cols, self.in_features, float(min(cb, batch))
            )
            offs = _offsets(self.cols[order] * batch)
            vals = np.ascontiguousarray(self.vals[order])
            run = kernels.spmm if parallel else kernels.spmm_serial
            self._geo[key] = (ptrs, vals, offs, cb, rb, run)
        return self._geo[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_f32(x)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        xt = x2.t()
        if xt.is_contiguous():
            pass  # a feature-major input: the operand as it is
        elif x2.is_contiguous() and kernels.transpose_fits_l1(*x2.shape):
            xt = torch.empty(x2.shape[1], x2.shape[0])
            kernels.transpose_into(x2.numpy(), xt.numpy())
        else:
            xt = xt.contiguous()
        batch = int(xt.shape[1])
        y = torch.empty(self.out_channels, batch, dtype=torch.float32)
        ptrs, vals, offs, cb, rb, run = self._geometry(batch)
        lo = np.float32(0.0 if self.relu else -np.inf)
        run(
            ptrs,
            vals,
            offs,
            xt.numpy().reshape(-1),
            y.numpy().reshape(-1),
            batch,
            self.bias_np,
            lo,
            cb,
            rb,
        )
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
    ptrs: np.ndarray  # [chunks, C_out + 1] nonzero pointers (see ``_column_chunks``)
    vals: np.ndarray
    offs: np.ndarray
    col_block: int
    row_block: int
    parallel: bool


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

    def __init__(self, layer: nn.Conv2d, relu: bool = False, pool: bool = False):
        super().__init__(layer, relu, pool)
        if self.groups != 1:
            raise PruneflowError("csr_numba runs convolutions with groups=1 only")
        w = layer.weight.detach()
        self.in_channels = int(w.shape[1])
        self.indptr, self.cols, self.vals = _csr(w.reshape(w.shape[0], -1))
        kh, kw = self.kernel_size
        self.tap_c = self.cols // (kh * kw)
        self.tap_i = (self.cols // kw) % kh
        self.tap_j = self.cols % kw
        self.bias_np = bias_of(layer).numpy()
        self._geo: dict[tuple[int, ...], _ConvGeometry] = {}

    def _geometry(self, n: int, h: int, w: int) -> _ConvGeometry:
        threads = int(numba.get_num_threads())
        key = (n, h, w, threads)
        if key in self._geo:
            return self._geo[key]
        c, co = self.in_channels, self.out_channels
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
        )
        ho, wo = conv_out_size(h, w, self.kernel_size, self.stride, self.padding, self.dilation)
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
        # an operand row holds one channel (all its kh*kw taps) or one im2col row
        taps_per_row = kh * kw if cols is None else 1
        per_column = (min(_CONV_CHUNK_BLOCK, ly) + reach) / taps_per_row
        ptrs, order = _column_chunks(self.indptr, self.cols, c * kh * kw, per_column)
        chunked = ptrs.shape[0] > 1
        run_threads = kernels.kernel_threads(threads, len(self.vals) * ly)
        parallel = run_threads > 1
        cb, rb = _blocks(ly, rows, reach, co, run_threads, _CONV_CHUNK_BLOCK if chunked else None)
        geo = _ConvGeometry(
            padded=padded,
            pack_dims=pack_dims,
            cols=cols,
            cols_src=cols_src,
            grid=torch.empty(co, ly),
            grid_view=grid_view,
            ly=ly,
            ptrs=ptrs,
            vals=np.ascontiguousarray(self.vals[order]),
            offs=_offsets(offs[order]),
            col_block=cb,
            row_block=rb,
            parallel=parallel,
        )
        self._geo[key] = geo
        return geo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise PruneflowError(f"conv2d expects NCHW input, got shape {tuple(x.shape)}")
        check_f32(x)
        n, _, h, w = (int(v) for v in x.shape)
        geo = self._geometry(n, h, w)
        ph, pw = self.padding
        if geo.pack_dims == (1, 0, 2, 3):
            interior = geo.padded[:, :, ph : ph + h, pw : pw + w]
        else:
            interior = geo.padded[:, ph : ph + h, pw : pw + w, :]
        interior.copy_(x.permute(*geo.pack_dims))
        if geo.cols is None:
            operand = geo.padded
        else:
            size, src_stride, dst_stride = geo.cols_src
            torch.as_strided(geo.cols, size, dst_stride).copy_(
                torch.as_strided(geo.padded, size, src_stride)
            )
            operand = geo.cols
        lo = np.float32(0.0 if self.relu else -np.inf)
        run = kernels.spmm if geo.parallel else kernels.spmm_serial
        run(
            geo.ptrs,
            geo.vals,
            geo.offs,
            operand.numpy().reshape(-1),
            geo.grid.numpy().reshape(-1),
            geo.ly,
            self.bias_np,
            lo,
            geo.col_block,
            geo.row_block,
        )
        size, stride = geo.grid_view
        return self._pooled(torch.as_strided(geo.grid, size, stride).contiguous())
