"""Direct sparse convolution (the ``direct_numba`` backend): no im2col, no output copy.

Each output plane ``y[n, o]`` is computed from the weight's nonzeros of output channel ``o``
(runs of ``(input channel, kh, kw)`` taps, CSR) as shifted, contiguous rows of the input::

    y[n, o, q] = act(bias[o] + sum_p vals[p] * xs[n, offs[p] + q])

where ``xs`` is the input in a layout in which every tap is a constant shift of the flat
output position ``q = ho * pitch + wo``:

- **stride 1**: ``xs = [N, C, Hp, Wp]``, the zero-padded NCHW input (the input itself when
  there is no padding: no copy at all); tap ``(c, i, j)`` is ``c*Hp*Wp + i*Wp + j``;
- **stride s > 1**: ``xs = [N, C, s, s, Hq, Wq]``, the padded input split into its ``s*s``
  phases (``xs[n, c, a, b, r, t] = xpad[n, c, s*r + a, s*t + b]``): tap ``(c, i, j)`` reads
  phase ``(i % s, j % s)`` shifted by ``(i // s, j // s)``, so a strided convolution is a
  stride-1 one over ``s*s`` times the channels with a ``ceil(k/s)`` kernel. The phase copy
  moves the input once (im2col moves it ``kh*kw`` times), only the phases some tap reads.

The vector dimension is the flat output position: a plane is walked in tiles of 64 floats
(the register-tiled accumulator of :mod:`pruneflow.timing.kernels`: every nonzero is one
broadcast and one unaligned load plus FMA per 16 lanes), each tile's results (bias and ReLU
applied in registers) land in a small buffer in L1, and only its valid columns (``wo < Wo``:
the row pitch is the padded width) are written straight into the NCHW output. The
``csr_numba`` path writes a ``[C_out, N*Hp*Wp]`` grid and copies it to NCHW afterwards, a
second pass over the whole output through memory that dominated at high sparsity. Work items
are ``(image, block of tiles)``: a tile's operand window is reused by every output channel,
and where the window of all input channels exceeds L1 the nonzeros are taken in input-channel
chunks, partial sums waiting in the buffer (as in ``csr_numba``).

A fully pruned output channel (no nonzeros) gets ``act(bias)`` everywhere. Runs on the
calling thread where the work is too small for a fork/join
(:func:`pruneflow.timing.kernels.parallel_worthwhile`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.timing import kernels
from pruneflow.timing.kernels import _JIT, LANES, TILE, _acc1, _acc2, _acc3, _acc4, _acc_half
from pruneflow.timing.layers import ExecLayer, bias_of, check_f32, conv_out_size
from pruneflow.timing.numba_layers import _column_chunks, _offsets

__all__ = ["DirectSparseConv", "direct_supports"]

_MAX_STRIDE = 2


def direct_supports(layer: nn.Module) -> bool:
    """Whether the direct kernel runs ``layer``: a zero-padded ``groups=1`` Conv2d with
    stride 1 or 2 and dilation 1 (other convolutions fall back to another backend)."""
    if not isinstance(layer, nn.Conv2d):
        return False
    return (
        layer.groups == 1
        and layer.padding_mode == "zeros"
        and not isinstance(layer.padding, str)
        and tuple(layer.dilation) == (1, 1)
        and layer.stride[0] == layer.stride[1]
        and 1 <= layer.stride[0] <= _MAX_STRIDE
    )


@intrinsic
def _store(typingctx, src, si, dst, di, count):
    """``dst[di : di + count] = src[si : si + count]`` for ``count <= TILE``: whole 16-lane
    vectors, then one 8-, 4-, 2- and 1-float piece as the bits of the rest say. A numba loop
    pays a negative-index check per element and is not vectorised, a ``memcpy`` call costs
    more than a short row, and masked stores are split lane by lane on AVX2 (each was slower
    than all the kernel's arithmetic at 99% sparsity on 14x14 maps)."""
    sig = types.void(src, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, sg, args):
        src_v, si, dst_v, di, count = args
        src_a = context.make_array(sg.args[0])(context, builder, src_v)
        dst_a = context.make_array(sg.args[2])(context, builder, dst_v)
        intp = count.type
        sbase = builder.gep(src_a.data, [si])
        dbase = builder.gep(dst_a.data, [di])

        def piece(width, at):
            ty = ir.VectorType(ir.FloatType(), width) if width > 1 else ir.FloatType()
            v = builder.load(builder.bitcast(builder.gep(sbase, [at]), ty.as_pointer()), align=4)
            builder.store(v, builder.bitcast(builder.gep(dbase, [at]), ty.as_pointer()), align=4)

        for k in range(TILE // LANES):
            full = builder.icmp_signed(">=", count, ir.Constant(intp, (k + 1) * LANES))
            with builder.if_then(full):
                piece(LANES, ir.Constant(intp, k * LANES))
        rest = builder.and_(count, ir.Constant(intp, LANES - 1))
        at = builder.sub(count, rest)
        width = LANES // 2
        while width >= 1:
            bit = builder.and_(rest, ir.Constant(intp, width))
            has = builder.icmp_signed("!=", bit, ir.Constant(intp, 0))
            with builder.if_then(has):
                piece(width, at)
            at = builder.add(at, bit)
            width //= 2
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always", **_JIT)
def _tile(indptr, vals, offs, x, xs, xend, acc, ab, o, n, b, lo, carry):
    """Positions ``[0, n)`` (``n <= TILE``) of a tile starting at operand position ``xs``, of
    output channel ``o``, over the nonzeros of ``indptr``: into ``acc[ab : ab + TILE]``
    (added to what is there with ``carry``). Whole vectors: lanes past ``n`` read junk inside
    the operand, ``xend`` bounds them."""
    start, stop = indptr[o], indptr[o + 1]
    nv = (n + LANES - 1) // LANES
    if xs + nv * LANES > xend:  # the operand's very end: no whole vector past it
        nv = (xend - xs) // LANES
    if nv == 4:
        _acc4(vals, offs, start, stop, x, xs, acc, ab, b, lo, carry)
    elif nv == 3:
        _acc3(vals, offs, start, stop, x, xs, acc, ab, b, lo, carry)
    elif nv == 2:
        _acc2(vals, offs, start, stop, x, xs, acc, ab, b, lo, carry)
    elif nv == 1 and n <= LANES // 2:
        _acc_half(vals, offs, start, stop, x, xs, acc, ab, b, lo, carry)
    elif nv == 1:
        _acc1(vals, offs, start, stop, x, xs, acc, ab, b, lo, carry)
    k = nv * LANES
    while k < n:  # only where whole vectors would read past the operand's end
        a = acc[ab + k] if carry else np.float32(0.0)
        for p in range(start, stop):
            a += vals[p] * x[xs + k + offs[p]]
        a += b
        acc[ab + k] = a if a > lo else lo
        k += 1


@njit(inline="always", **_JIT)
def _item(indptr, vals, offs, x, xend, y, acc, item, ntb, tile_block, cout, img, length,
          segs, seg_ptr, plane, bias, lo):  # fmt: skip
    """One image's tiles ``[tb * tile_block, (tb + 1) * tile_block)``, every output channel
    per tile, the nonzeros chunk by chunk (``indptr[c]``): a chunk's operand window stays in
    L1 while every output channel reads it. Partial sums wait in ``acc`` (a ``TILE`` row per
    output channel; one row where there is one chunk); with the last chunk come bias and
    activation, and the tile's row segments ``segs[g] = (start in tile, offset in the output
    plane, length, stored length)`` are stored to the NCHW output (see
    :func:`_row_segments`)."""
    nchunks = indptr.shape[0]
    no_act = np.float32(-np.inf)
    n = item // ntb
    tb = item - n * ntb
    for t in range(tb * tile_block, min((tb + 1) * tile_block, (length + TILE - 1) // TILE)):
        m = min(TILE, length - t * TILE)
        xs = n * img + t * TILE
        for c in range(nchunks):
            last = c == nchunks - 1
            for o in range(cout):
                ab = 0 if nchunks == 1 else o * TILE
                b = bias[o] if last else np.float32(0.0)
                _tile(indptr[c], vals, offs, x, xs, xend, acc, ab, o, m, b,
                      lo if last else no_act, c > 0)  # fmt: skip
                if last:
                    yq = (n * cout + o) * plane
                    for g in range(seg_ptr[t], seg_ptr[t + 1]):
                        _store(acc, ab + segs[g, 0], y, yq + segs[g, 1], segs[g, 3])


@njit(parallel=True, **_JIT)
def direct_conv(indptr, vals, offs, x, y, batch, img, length, segs, seg_ptr, plane, bias, lo,
                tile_block):  # fmt: skip
    """``y[n, o]`` (flat NCHW) for every image and output channel, on numba's threads.

    ``indptr``: ``[chunks, C_out + 1]``, the nonzeros grouped by input-channel chunk, then by
    output channel; ``x``: the flat operand (``img`` floats per image); ``length``: flat
    output positions per plane on the operand's grid; ``segs``/``seg_ptr``: each tile's row
    segments that are output (see :func:`_row_segments`); ``plane``: floats per output plane.
    Work items: (image, block of ``tile_block`` tiles).
    """
    cout = indptr.shape[1] - 1
    ntb = ((length + TILE - 1) // TILE + tile_block - 1) // tile_block
    xend = x.shape[0] - (offs.max() if offs.shape[0] else 0)
    rows = cout + 1 if indptr.shape[0] > 1 else 2
    for item in prange(batch * ntb):
        acc = np.empty(rows * TILE, dtype=np.float32)
        _item(indptr, vals, offs, x, xend, y, acc, item, ntb, tile_block, cout, img,
              length, segs, seg_ptr, plane, bias, lo)  # fmt: skip


@njit(**_JIT)
def direct_conv_serial(indptr, vals, offs, x, y, batch, img, length, segs, seg_ptr, plane,
                       bias, lo, tile_block):  # fmt: skip
    """:func:`direct_conv` on the calling thread (work too small to pay a fork/join)."""
    cout = indptr.shape[1] - 1
    ntb = ((length + TILE - 1) // TILE + tile_block - 1) // tile_block
    xend = x.shape[0] - (offs.max() if offs.shape[0] else 0)
    rows = cout + 1 if indptr.shape[0] > 1 else 2
    acc = np.empty(rows * TILE, dtype=np.float32)
    for item in range(batch * ntb):
        _item(indptr, vals, offs, x, xend, y, acc, item, ntb, tile_block, cout, img,
              length, segs, seg_ptr, plane, bias, lo)  # fmt: skip


@dataclass
class _Geometry:
    """Per input shape: the operand buffer and how the input is copied into it."""

    operand: np.ndarray | None  # flat; None: the (contiguous) input is the operand itself
    # (view of the operand, size, source strides, source offset) per strided copy
    copies: list[tuple[torch.Tensor, tuple[int, ...], tuple[int, ...], int]]
    img: int  # operand floats per image
    length: int  # flat output positions per plane on the operand grid
    segs: np.ndarray  # [segments, 4]: each tile's output row segments
    seg_ptr: np.ndarray  # [tiles + 1]
    ho: int
    wo: int
    ptrs: np.ndarray  # [chunks, C_out + 1] nonzero pointers
    vals: np.ndarray
    offs: np.ndarray
    tile_block: int
    parallel: bool
    run: Callable[..., None]  # direct_conv where parallel, else direct_conv_serial


def _row_segments(
    length: int, pitch: int, wo: int, tiles: int, tile_block: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per tile of the pitch-``pitch`` grid: ``(start in tile, offset in the output plane,
    length, stored length)`` of each run of valid columns (``< wo``) it holds, and the tiles'
    pointers.

    The stored length rounds a run up to whole 8-float pieces (one or two vector stores
    instead of up to four pieces and their branches) where the floats past the run land on
    output positions that a later store of the same thread overwrites: the next run, in the
    same tile or in the next tile of the same work item (tiles come in blocks of
    ``tile_block``, each block on one thread, tile by tile). The run that ends a plane or a
    block is stored exactly.
    """
    runs: list[list[tuple[int, int, int]]] = []
    for t in range(tiles):
        q, end, here = t * TILE, min((t + 1) * TILE, length), []
        while q < end:
            r, col = divmod(q, pitch)
            if col >= wo:
                q = (r + 1) * pitch
                continue
            seg = min(end, r * pitch + wo) - q
            here.append((q - t * TILE, r * wo + col, seg))
            q += seg
        runs.append(here)
    segs, ptr = [], [0]
    for t, here in enumerate(runs):
        same_item = t + 1 < tiles and (t + 1) % tile_block != 0
        for k, (start, off, seg) in enumerate(here):
            nxt = here[k + 1] if k + 1 < len(here) else (runs[t + 1][0] if same_item else None)
            room = nxt[2] if nxt is not None and nxt[1] == off + seg else 0
            segs.append((start, off, seg, min(-(-seg // 8) * 8, seg + room)))
        ptr.append(len(segs))
    return np.asarray(segs, dtype=np.int64).reshape(-1, 4), np.asarray(ptr, dtype=np.int64)


def _phase_copies(
    n: int,
    c: int,
    h: int,
    w: int,
    s: int,
    pad: tuple[int, int],
    hq: int,
    wq: int,
    used: set[tuple[int, int]],
) -> list[tuple[tuple[int, ...], tuple[int, ...], int, tuple[int, ...], int]]:
    """Strided views ``(size, dst strides, dst offset, src strides, src offset)`` that copy an
    NCHW input into the ``[N, C, s, s, Hq, Wq]`` phase buffer (padding stays zero), for the
    phases ``used`` by some nonzero (a 1x1 stride-2 layer reads a quarter of its input)."""
    ph, pw = pad
    out = []
    for a in range(s):
        r_lo = max(0, -(-(ph - a) // s))  # first phase row inside the input
        r_hi = min(hq - 1, (h - 1 + ph - a) // s)
        for b in range(s):
            t_lo = max(0, -(-(pw - b) // s))
            t_hi = min(wq - 1, (w - 1 + pw - b) // s)
            if r_hi < r_lo or t_hi < t_lo or (a, b) not in used:
                continue
            size = (n, c, r_hi - r_lo + 1, t_hi - t_lo + 1)
            dst_strides = (c * s * s * hq * wq, s * s * hq * wq, wq, 1)
            dst_off = (a * s + b) * hq * wq + r_lo * wq + t_lo
            src_strides = (c * h * w, h * w, s * w, s)
            src_off = (s * r_lo + a - ph) * w + (s * t_lo + b - pw)
            out.append((size, dst_strides, dst_off, src_strides, src_off))
    return out


class DirectSparseConv(ExecLayer):
    """CSR weight, direct sparse convolution over a padded (or phase-split) NCHW operand.

    Per call: one order-preserving copy of the input into the zero-padded operand (none for
    an unpadded stride-1 layer), the kernel writing the NCHW output directly (bias and ReLU
    fused). Not re-entrant (the operand buffer is reused per input shape).
    """

    backend = "direct_numba"

    def __init__(self, layer: nn.Conv2d, relu: bool = False):
        super().__init__(layer, relu)
        if not direct_supports(layer):
            raise PruneflowError(
                f"direct_numba runs zero-padded groups=1 convolutions with stride 1 or 2 and "
                f"dilation 1, not {layer!r}"
            )
        w = layer.weight.detach().to(torch.float32).cpu().numpy()
        co, ci, kh, kw = w.shape
        rows, c, i, j = np.nonzero(w)
        self.in_channels = int(ci)
        self.indptr = np.zeros(co + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=co), out=self.indptr[1:])
        self.vals = np.ascontiguousarray(w[rows, c, i, j], dtype=np.float32)
        self.taps = (c.astype(np.int64), i.astype(np.int64), j.astype(np.int64))
        self.bias_np = bias_of(layer).numpy()
        self.lo = np.float32(0.0 if relu else -np.inf)  # the fused ReLU's floor
        self._geo: dict[tuple[int, ...], _Geometry] = {}

    def _geometry(self, n: int, h: int, w: int) -> _Geometry:
        threads = int(numba.get_num_threads())
        key = (n, h, w, threads)
        if key in self._geo:
            return self._geo[key]
        c = self.in_channels
        (kh, kw), s, (ph, pw) = self.kernel_size, self.stride[0], self.padding
        ho, wo = conv_out_size(h, w, self.kernel_size, self.stride, self.padding, self.dilation)
        hp, wp = h + 2 * ph, w + 2 * pw
        # the phase grid must hold every shifted read of a valid output position
        hq = max(-(-hp // s), ho + (kh - 1) // s)
        wq = max(-(-wp // s), wo + (kw - 1) // s)
        tc, ti, tj = self.taps
        offs = ((tc * s + ti % s) * s + tj % s) * hq * wq + (ti // s) * wq + tj // s
        operand, copies = None, []
        if s != 1 or ph != 0 or pw != 0:
            buffer = torch.zeros(n * c * s * s * hq * wq)
            used = set(zip((ti % s).tolist(), (tj % s).tolist(), strict=True))
            for size, dst_strides, dst_off, src_strides, src_off in _phase_copies(
                n, c, h, w, s, (ph, pw), hq, wq, used
            ):
                view = torch.as_strided(buffer, size, dst_strides, dst_off)
                copies.append((view, size, src_strides, src_off))
            operand = buffer.numpy()
        work = len(self.vals) * n * ho * wo
        parallel = threads > 1 and kernels.parallel_worthwhile(work)
        length = (ho - 1) * wq + wo
        tiles = -(-length // kernels.TILE)
        # chunks of input channels whose operand window (a tile plus the kernel's reach, per
        # phase) fits L1, as in the csr_numba kernel
        reach = int(offs.max() % (hq * wq)) if len(offs) else 0
        per_column = (kernels.TILE + reach) * s * s / (kh * kw)
        ptrs, order = _column_chunks(self.indptr, (tc * kh + ti) * kw + tj, c * kh * kw, per_column)
        # at least four items per thread where there are enough tiles
        tile_block = tiles if threads <= 1 else max(1, -(-tiles * n // (4 * threads)))
        tile_block = min(tile_block, tiles)
        segs, seg_ptr = _row_segments(length, wq, wo, tiles, tile_block)
        geo = _Geometry(
            operand=operand,
            copies=copies,
            img=c * s * s * hq * wq,
            length=length,
            segs=segs,
            seg_ptr=seg_ptr,
            ho=ho,
            wo=wo,
            ptrs=ptrs,
            vals=np.ascontiguousarray(self.vals[order]),
            offs=_offsets(offs[order]),
            tile_block=tile_block,
            parallel=parallel,
            run=direct_conv if parallel else direct_conv_serial,
        )
        self._geo[key] = geo
        return geo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise PruneflowError(f"conv2d expects NCHW input, got shape {tuple(x.shape)}")
        check_f32(x)
        n, _, h, w = x.shape
        geo = self._geometry(n, h, w)
        x = x.contiguous()
        if geo.operand is None:
            operand = x.numpy().reshape(-1)
        else:
            operand = geo.operand
            for view, size, src_strides, src_off in geo.copies:
                view.copy_(x.as_strided(size, src_strides, src_off))
        y = torch.empty(n, self.out_channels, geo.ho, geo.wo)
        geo.run(
            geo.ptrs,
            geo.vals,
            geo.offs,
            operand,
            y.numpy().reshape(-1),
            n,
            geo.img,
            geo.length,
            geo.segs,
            geo.seg_ptr,
            geo.ho * geo.wo,
            self.bias_np,
            self.lo,
            geo.tile_block,
        )
        return y
