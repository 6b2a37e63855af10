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
are ``(image, block of tiles)``, a contiguous range of them per thread: a tile's operand
window is reused by every output channel, and where the window of all input channels exceeds
L1 the nonzeros are taken in input-channel chunks, partial sums waiting in the buffer (as in
``csr_numba``).

**Aligned layout.** A 16-float vector load at an offset that is not a multiple of 16 floats
spans two cache lines, and on AVX-512 nearly every load of the kernel did (a tap's offset is
its row and column shift on the grid). Where the layer's work pays for it, the grid is chosen
so that every tap's offset is a multiple of 16 plus one of a few remainders: rows widened to a
multiple of 16 floats (remainders: the column shifts ``j // s``; 28x28 maps 6% more
positions, 14x14 none), or, where that adds too many (``_MAX_ALIGN_WASTE``: 7x7 maps, 69%),
rows of ``w + pw`` floats whose right padding is the next row's left padding (7x7 maps:
rows of 8, remainders 0-2 and 8-10). Per image the kernel first copies the image's operand
once per remainder, shifted left by it, into a per-thread scratch that stays in L2
(:func:`_shifted_copies`), and each tap reads the copy of its remainder at an aligned offset.
The copies must be paid for by the multiply-adds (``_MIN_WORK_PER_COPIED``); at 98-99%
sparsity they mostly are not. Taken on AVX-512 hosts only (``_WIDE_VECTORS``): with AVX2's
32-byte loads the split is rarer and the copies' larger L1 window lost. Measured in one
process (``bench/runtime_fusions.py``, smallcnn, AVX-512): 1.35x / 1.23x / 1.16x / 1.05x end
to end at 80 / 90 / 95 / 99% sparsity over the same kernel on the plain grid.

With a fused 2x2 max pooling (``pool=True``) tiles hold whole output row pairs (or a column
block of one pair, on maps wider than half a tile), and only the pooled output is stored
(:func:`_pool_tiles`, :func:`_pool_store`). Where the runtime chained this layer to the
direct convolution that alone reads its output (``next_layer``), the output is stored into
that layer's zero-padded operand, at its row pitch, and the layer copies nothing
(:meth:`DirectSparseConv.input_buffer`).

A fully pruned output channel (no nonzeros) gets ``act(bias)`` everywhere. Runs on the
calling thread where the work is too small for a fork/join
(:func:`pruneflow.timing.kernels.parallel_worthwhile`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import torch
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
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


@intrinsic
def _copy_and_clear(typingctx, src, si, dst, di, count, clear):
    """``dst[di : di + count] = src[si : si + count]`` (``llvm.memcpy``: libc's copy, near
    memory speed on a whole image; a numba loop pays a negative-index check per element and
    ran at a quarter of it), then ``dst[di + count : di + count + clear] = 0``."""
    sig = types.void(src, types.intp, dst, types.intp, types.intp, types.intp)

    def codegen(context, builder, sg, args):
        src_v, si, dst_v, di, count, clear = args
        src_a = context.make_array(sg.args[0])(context, builder, src_v)
        dst_a = context.make_array(sg.args[2])(context, builder, dst_v)
        to = builder.gep(dst_a.data, [di])
        cgutils.raw_memcpy(builder, to, builder.gep(src_a.data, [si]), count, 4)
        tail = builder.bitcast(builder.gep(to, [count]), ir.IntType(8).as_pointer())
        cgutils.memset(builder, tail, builder.mul(clear, ir.Constant(clear.type, 4)), 0)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always", **_JIT)
def _shifted_copies(x, src, img, buf, slot, shifts):
    """``buf[k * slot + q] = x[src + shifts[k] + q]`` per copy ``k`` (the image's operand
    shifted left by ``shifts[k]`` floats), zeros to the end of each slot: the operand of the
    aligned layout (see :meth:`DirectSparseConv._geometry`)."""
    for k in range(shifts.shape[0]):
        j = shifts[k]
        _copy_and_clear(x, src + j, buf, k * slot, img - j, slot - img + j)


@njit(inline="always", **_JIT)
def _thread_operand(x, img, offs, scratch, shifts, th):
    """What thread ``th``'s tiles read: its scratch row (the shifted copies of the image at
    hand, image stride 0) where there are shifts, else the operand ``x`` (``img`` floats per
    image); and the bound of whole-vector reads (see :func:`_tile`)."""
    src, stride = (scratch[th], 0) if shifts.shape[0] > 0 else (x, img)
    return src, stride, src.shape[0] - (offs.max() if offs.shape[0] else 0)


@njit(inline="always", **_JIT)
def _image_copies(x, img, n, last, buf, slot, shifts):
    """The shifted copies of image ``n`` in ``buf``, made unless they hold it (``last``);
    the image they now hold."""
    if shifts.shape[0] > 0 and n != last:
        _shifted_copies(x, n * img, img, buf, slot, shifts)
    return n


@njit(inline="always", **_JIT)
def _thread_items(th, nth, items):
    per = (items + nth - 1) // nth
    return th * per, min((th + 1) * per, items)


@njit(parallel=True, **_JIT)
def direct_conv(indptr, vals, offs, x, y, batch, img, length, segs, seg_ptr, plane, bias, lo,
                tile_block, scratch, shifts):  # fmt: skip
    """``y[n, o]`` (flat NCHW) for every image and output channel, on numba's threads.

    ``indptr``: ``[chunks, C_out + 1]``, the nonzeros grouped by input-channel chunk, then by
    output channel; ``x``: the flat operand (``img`` floats per image); ``length``: flat
    output positions per plane on the operand's grid; ``segs``/``seg_ptr``: each tile's row
    segments that are output (see :func:`_row_segments`); ``plane``: floats per output plane.
    Work items: (image, block of ``tile_block`` tiles), a contiguous range per thread.
    ``shifts`` not empty: the nonzeros' offsets address shifted copies of an image's operand,
    made per image in the thread's row of ``scratch`` (see :func:`_shifted_copies`).
    """
    cout = indptr.shape[1] - 1
    ntb = ((length + TILE - 1) // TILE + tile_block - 1) // tile_block
    rows = cout + 1 if indptr.shape[0] > 1 else 2
    nth = scratch.shape[0]
    slot = scratch.shape[1] // max(shifts.shape[0], 1)
    for th in prange(nth):
        acc = np.empty(rows * TILE, dtype=np.float32)
        _items(indptr, vals, offs, x, y, acc, th, nth, batch, ntb, tile_block, cout, img,
               length, segs, seg_ptr, plane, bias, lo, scratch, shifts, slot)  # fmt: skip


@njit(inline="always", **_JIT)
def _items(indptr, vals, offs, x, y, acc, th, nth, batch, ntb, tile_block, cout, img, length,
           segs, seg_ptr, plane, bias, lo, scratch, shifts, slot):  # fmt: skip
    """Thread ``th``'s work items of :func:`direct_conv`."""
    lo_item, hi_item = _thread_items(th, nth, batch * ntb)
    src, stride, xend = _thread_operand(x, img, offs, scratch, shifts, th)
    last = -1
    for item in range(lo_item, hi_item):
        last = _image_copies(x, img, item // ntb, last, src, slot, shifts)
        _item(indptr, vals, offs, src, xend, y, acc, item, ntb, tile_block, cout, stride,
              length, segs, seg_ptr, plane, bias, lo)  # fmt: skip


@njit(**_JIT)
def direct_conv_serial(indptr, vals, offs, x, y, batch, img, length, segs, seg_ptr, plane,
                       bias, lo, tile_block, scratch, shifts):  # fmt: skip
    """:func:`direct_conv` on the calling thread (work too small to pay a fork/join)."""
    cout = indptr.shape[1] - 1
    ntb = ((length + TILE - 1) // TILE + tile_block - 1) // tile_block
    rows = cout + 1 if indptr.shape[0] > 1 else 2
    acc = np.empty(rows * TILE, dtype=np.float32)
    slot = scratch.shape[1] // max(shifts.shape[0], 1)
    _items(indptr, vals, offs, x, y, acc, 0, 1, batch, ntb, tile_block, cout, img, length,
           segs, seg_ptr, plane, bias, lo, scratch, shifts, slot)  # fmt: skip


# Pooled tiles: a tile's second output row lands this far into its accumulator slot
# (a tile plus one vector: the pooling reads whole vectors past a row's last column)
_POOL_ROW = TILE + LANES
_POOL_SLOT = 2 * _POOL_ROW
_POOL_GROUP = LANES // 2  # pooled outputs per vector of maxima


@intrinsic
def _pool_store(typingctx, src, a, b, dst, di, count):
    """``dst[di + t] = max(src[a + 2t], src[a + 2t + 1], src[b + 2t], src[b + 2t + 1])`` for
    ``t < count <= TILE // 2``: the 2x2 max pooling of two output row segments waiting in the
    accumulator (``a``, ``b``: their starts). Per 8 outputs: two 16-float loads, their
    maximum, the maximum of its even and odd lanes (two shuffles), one 8-float store; the last
    partial group is stored in 4-, 2- and 1-float pieces from a stack copy. Lanes past
    ``count`` read the slot's slack and are never stored."""
    sig = types.void(src, types.intp, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, sg, args):
        src_v, a, b, dst_v, di, count = args
        src_a = context.make_array(sg.args[0])(context, builder, src_v)
        dst_a = context.make_array(sg.args[3])(context, builder, dst_v)
        intp = count.type
        i32 = ir.IntType(32)
        wide = ir.VectorType(ir.FloatType(), LANES)
        half = ir.VectorType(ir.FloatType(), _POOL_GROUP)
        row_a = builder.gep(src_a.data, [a])
        row_b = builder.gep(src_a.data, [b])
        dbase = builder.gep(dst_a.data, [di])
        spill = cgutils.alloca_once(builder, half)

        def vmax(u, v):
            return builder.select(builder.fcmp_ordered(">", u, v), u, v)

        def group(g):  # the 8 pooled outputs from output index g on
            at = builder.mul(g, ir.Constant(intp, 2))
            ua = builder.load(builder.bitcast(builder.gep(row_a, [at]), wide.as_pointer()), align=4)
            ub = builder.load(builder.bitcast(builder.gep(row_b, [at]), wide.as_pointer()), align=4)
            m = vmax(ua, ub)
            even = ir.Constant(ir.VectorType(i32, _POOL_GROUP), list(range(0, LANES, 2)))
            odd = ir.Constant(ir.VectorType(i32, _POOL_GROUP), list(range(1, LANES, 2)))
            return vmax(builder.shuffle_vector(m, m, even), builder.shuffle_vector(m, m, odd))

        for k in range(TILE // 2 // _POOL_GROUP):
            g = ir.Constant(intp, k * _POOL_GROUP)
            full = builder.icmp_signed(">=", count, ir.Constant(intp, (k + 1) * _POOL_GROUP))
            with builder.if_then(full):
                out = builder.bitcast(builder.gep(dbase, [g]), half.as_pointer())
                builder.store(group(g), out, align=4)
        rest = builder.and_(count, ir.Constant(intp, _POOL_GROUP - 1))
        start = builder.sub(count, rest)
        with builder.if_then(builder.icmp_signed("!=", rest, ir.Constant(intp, 0))):
            builder.store(group(start), spill)
            flat = builder.bitcast(spill, ir.FloatType().as_pointer())
            at = ir.Constant(intp, 0)
            width = _POOL_GROUP // 2
            while width >= 1:
                bit = builder.and_(rest, ir.Constant(intp, width))
                with builder.if_then(builder.icmp_signed("!=", bit, ir.Constant(intp, 0))):
                    ty = ir.VectorType(ir.FloatType(), width) if width > 1 else ir.FloatType()
                    v = builder.load(builder.bitcast(builder.gep(flat, [at]), ty.as_pointer()))
                    dst = builder.gep(dbase, [builder.add(start, at)])
                    builder.store(v, builder.bitcast(dst, ty.as_pointer()), align=4)
                at = builder.add(at, bit)
                width //= 2
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always", **_JIT)
def _pool_item(indptr, vals, offs, x, xend, y, acc, item, ntb, tile_block, cout, img, calls,
               call_ptr, psegs, pseg_ptr, plane, bias, lo):  # fmt: skip
    """:func:`_item` with the 2x2 max pooling in the store: a tile is ``calls[k] = (slot
    offset, start on the operand grid, positions)`` (one call over whole row pairs, or one per
    row of a pair where a pair is wider than a tile), then each pooled row segment
    ``psegs[g] = (first row in slot, second row in slot, offset in the pooled plane, count)``
    is stored (:func:`_pool_tiles`). Partial sums of input-channel chunks wait in a slot per
    output channel."""
    nchunks = indptr.shape[0]
    no_act = np.float32(-np.inf)
    n = item // ntb
    tb = item - n * ntb
    for t in range(tb * tile_block, min((tb + 1) * tile_block, call_ptr.shape[0] - 1)):
        for c in range(nchunks):
            last = c == nchunks - 1
            for o in range(cout):
                ab = 0 if nchunks == 1 else o * _POOL_SLOT
                b = bias[o] if last else np.float32(0.0)
                for k in range(call_ptr[t], call_ptr[t + 1]):
                    _tile(indptr[c], vals, offs, x, n * img + calls[k, 1], xend, acc,
                          ab + calls[k, 0], o, calls[k, 2], b, lo if last else no_act,
                          c > 0)  # fmt: skip
                if last:
                    yq = (n * cout + o) * plane
                    for g in range(pseg_ptr[t], pseg_ptr[t + 1]):
                        _pool_store(acc, ab + psegs[g, 0], ab + psegs[g, 1], y,
                                    yq + psegs[g, 2], psegs[g, 3])  # fmt: skip


@njit(inline="always", **_JIT)
def _pool_items(indptr, vals, offs, x, y, acc, th, nth, batch, ntb, tile_block, cout, img,
                calls, call_ptr, psegs, pseg_ptr, plane, bias, lo, scratch, shifts,
                slot):  # fmt: skip
    """Thread ``th``'s work items of :func:`direct_conv_pool` (see :func:`_items`)."""
    lo_item, hi_item = _thread_items(th, nth, batch * ntb)
    src, stride, xend = _thread_operand(x, img, offs, scratch, shifts, th)
    last = -1
    for item in range(lo_item, hi_item):
        last = _image_copies(x, img, item // ntb, last, src, slot, shifts)
        _pool_item(indptr, vals, offs, src, xend, y, acc, item, ntb, tile_block, cout, stride,
                   calls, call_ptr, psegs, pseg_ptr, plane, bias, lo)  # fmt: skip


@njit(parallel=True, **_JIT)
def direct_conv_pool(indptr, vals, offs, x, y, batch, img, calls, call_ptr, psegs, pseg_ptr,
                     plane, bias, lo, tile_block, scratch, shifts):  # fmt: skip
    """:func:`direct_conv` writing the 2x2 max pooling of the activated output (``plane``:
    floats per pooled plane), on numba's threads."""
    cout = indptr.shape[1] - 1
    ntb = (call_ptr.shape[0] - 1 + tile_block - 1) // tile_block
    slots = cout if indptr.shape[0] > 1 else 1
    nth = scratch.shape[0]
    slot = scratch.shape[1] // max(shifts.shape[0], 1)
    for th in prange(nth):
        acc = np.empty(slots * _POOL_SLOT + LANES, dtype=np.float32)
        _pool_items(indptr, vals, offs, x, y, acc, th, nth, batch, ntb, tile_block, cout, img,
                    calls, call_ptr, psegs, pseg_ptr, plane, bias, lo, scratch, shifts,
                    slot)  # fmt: skip


@njit(**_JIT)
def direct_conv_pool_serial(indptr, vals, offs, x, y, batch, img, calls, call_ptr, psegs,
                            pseg_ptr, plane, bias, lo, tile_block, scratch, shifts):  # fmt: skip
    """:func:`direct_conv_pool` on the calling thread."""
    cout = indptr.shape[1] - 1
    ntb = (call_ptr.shape[0] - 1 + tile_block - 1) // tile_block
    slots = cout if indptr.shape[0] > 1 else 1
    acc = np.empty(slots * _POOL_SLOT + LANES, dtype=np.float32)
    slot = scratch.shape[1] // max(shifts.shape[0], 1)
    _pool_items(indptr, vals, offs, x, y, acc, 0, 1, batch, ntb, tile_block, cout, img, calls,
                call_ptr, psegs, pseg_ptr, plane, bias, lo, scratch, shifts, slot)  # fmt: skip


def _pool_tiles(
    ho: int, wo: int, pitch: int, out_pitch: int | None = None, out_base: int = 0
) -> tuple[np.ndarray, ...]:
    """The pooled kernel's tiles over an ``ho x wo`` output on a grid of row pitch ``pitch``:
    ``(calls, call_ptr, psegs, pseg_ptr)`` (see :func:`_pool_item`). The pooled output's rows
    are ``out_pitch`` floats apart from ``out_base`` on in each plane (default: contiguous).

    Where a row pair fits a tile (``2 * pitch <= TILE``), a tile is as many whole row pairs as
    fit, computed in one call (an odd last row or column, dropped by floor-mode pooling, is not
    computed); otherwise each pair is cut into column blocks of up to a tile, its two rows
    computed by two calls into the two halves of the slot.
    """
    pairs, width = ho // 2, wo // 2
    out_pitch = width if out_pitch is None else out_pitch
    calls: list[tuple[int, int, int]] = []
    segs: list[tuple[int, int, int, int]] = []
    call_ptr, seg_ptr = [0], [0]
    if pairs and width and 2 * pitch <= TILE:
        per_tile = TILE // (2 * pitch)
        for r0 in range(0, pairs, per_tile):
            m = min(per_tile, pairs - r0)
            calls.append((0, 2 * r0 * pitch, (2 * m - 1) * pitch + 2 * width))
            for j in range(m):
                at = out_base + (r0 + j) * out_pitch
                segs.append((2 * j * pitch, (2 * j + 1) * pitch, at, width))
            call_ptr.append(len(calls))
            seg_ptr.append(len(segs))
    elif pairs and width:
        for r in range(pairs):
            for c0 in range(0, 2 * width, TILE):
                cols = min(TILE, 2 * width - c0)
                calls.append((0, 2 * r * pitch + c0, cols))
                calls.append((_POOL_ROW, (2 * r + 1) * pitch + c0, cols))
                segs.append((0, _POOL_ROW, out_base + r * out_pitch + c0 // 2, cols // 2))
                call_ptr.append(len(calls))
                seg_ptr.append(len(segs))
    return (
        np.asarray(calls, dtype=np.int64).reshape(-1, 3),
        np.asarray(call_ptr, dtype=np.int64),
        np.asarray(segs, dtype=np.int64).reshape(-1, 4),
        np.asarray(seg_ptr, dtype=np.int64),
    )


@dataclass
class _Geometry:
    """Per input shape: the operand buffer, how the input is copied into it, the tiles."""

    operand: np.ndarray | None  # flat; None: the (contiguous) input is the operand itself
    # (view of the operand, size, source strides, source offset) per strided copy
    copies: list[tuple[torch.Tensor, tuple[int, ...], tuple[int, ...], int]]
    # stride 1 with padding: the operand's interior as an NCHW view, where the layer before
    # may write its output (then there is nothing to copy)
    interior: torch.Tensor | None
    img: int  # operand floats per image
    pitch: int  # row pitch of the operand grid
    length: int  # flat output positions per plane on the operand grid
    tiles: int
    ho: int
    wo: int
    ptrs: np.ndarray  # [chunks, C_out + 1] nonzero pointers
    vals: np.ndarray
    offs: np.ndarray
    tile_block: int
    parallel: bool
    # aligned layout: per thread, a copy of an image's operand per shift in ``shifts`` (``[threads,
    # copies * slot]``, each row 64-byte aligned); none: ``[threads, 0]``, no shifts
    scratch: np.ndarray
    shifts: np.ndarray
    run: Callable[..., None]  # the kernel: pooled or not, parallel or serial
    # per output layout (row pitch, offset): the stores, (segs, seg_ptr) of
    # :func:`_row_segments`, or with the fused pooling (calls, call_ptr, psegs, pseg_ptr) of
    # :func:`_pool_tiles`, and the kernel's entry point for them (:func:`kernels.compiled`)
    stores: dict[tuple[int, int], tuple[tuple[np.ndarray, ...], Callable[..., None]]]


def _row_segments(
    length: int,
    pitch: int,
    wo: int,
    tiles: int,
    tile_block: int,
    out_pitch: int | None = None,
    out_base: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per tile of the pitch-``pitch`` grid: ``(start in tile, offset in the output plane,
    length, stored length)`` of each run of valid columns (``< wo``) it holds, and the tiles'
    pointers. Output rows are ``out_pitch`` floats apart from ``out_base`` on (default:
    contiguous rows).

    The stored length rounds a run up to whole 8-float pieces (one or two vector stores
    instead of up to four pieces and their branches) where the floats past the run land on
    output positions that a later store of the same thread overwrites: the next run, in the
    same tile or in the next tile of the same work item (tiles come in blocks of
    ``tile_block``, each block on one thread, tile by tile). The run that ends a plane or a
    block is stored exactly.
    """
    out_pitch = wo if out_pitch is None else out_pitch
    runs: list[list[tuple[int, int, int]]] = []
    for t in range(tiles):
        q, end, here = t * TILE, min((t + 1) * TILE, length), []
        while q < end:
            r, col = divmod(q, pitch)
            if col >= wo:
                q = (r + 1) * pitch
                continue
            seg = min(end, r * pitch + wo) - q
            here.append((q - t * TILE, out_base + r * out_pitch + col, seg))
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


# the aligned layout widens the operand's rows to a multiple of LANES floats: taken where that
# adds at most this share of output positions (28x28 maps: 1.06; 14x14: none; 7x7: 1.69)
_MAX_ALIGN_WASTE = 1.15
# ... on hosts with 64-byte vectors, whose every unaligned load splits a cache line; with
# AVX2's 32-byte loads (half of them split) three copies' window in L1 made conv3 and conv4
# 1.23-1.38x slower
_WIDE_VECTORS = bool(llvm.get_host_cpu_features().get("avx512f"))
# ... and where the kernel's multiply-adds per image (nonzeros x positions) are at least this
# many per float its shifted copies move: smallcnn's convolutions lost 2-6% at 99% sparsity
# (3.3 and 1.8 of them), gained 8-19% at 95% (9-17)
_MIN_WORK_PER_COPIED = 6.0


def _slot(img: int) -> int:
    """Floats per shifted copy of an image's operand: the image and a tile of slack that the
    last tile's whole vectors read, a multiple of LANES."""
    return -(-(img + TILE + LANES) // LANES) * LANES


def _aligned_rows(rows: int, cols: int) -> np.ndarray:
    """An uninitialised ``[rows, cols]`` float32 array whose rows start on 64-byte
    boundaries (``cols`` a multiple of LANES)."""
    flat = np.empty(rows * cols + LANES, dtype=np.float32)
    skip = (-flat.ctypes.data // 4) % LANES
    return flat[skip : skip + rows * cols].reshape(rows, cols)


def _tap_offsets(taps: tuple[np.ndarray, ...], s: int, hq: int, wq: int) -> np.ndarray:
    """Each nonzero's operand offset on the ``[C, s, s, hq, wq]`` phase grid of an image."""
    tc, ti, tj = taps
    return ((tc * s + ti % s) * s + tj % s) * hq * wq + (ti // s) * wq + tj // s


def _remainders(offs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct remainders of the offsets modulo LANES (the aligned layout's copies, one
    per remainder) and each offset's copy."""
    found, which = np.unique(offs % LANES, return_inverse=True)
    return found.astype(np.int64), which.reshape(-1)


class DirectSparseConv(ExecLayer):
    """CSR weight, direct sparse convolution over a padded (or phase-split) NCHW operand.

    Per call: one order-preserving copy of the input into the zero-padded operand (none for
    an unpadded stride-1 layer), the kernel writing the NCHW output directly (bias and ReLU
    fused; with ``pool``, the 2x2 max pooling too: only the pooled output is written). Not
    re-entrant (the operand buffer is reused per input shape).
    """

    backend = "direct_numba"
    fuses_pool = True

    def __init__(
        self, layer: nn.Conv2d, relu: bool = False, pool: bool = False, aligned: bool | None = None
    ):
        super().__init__(layer, relu, pool)
        self.aligned = aligned  # None: where the widened rows cost little (_MAX_ALIGN_WASTE)
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
        padded = s != 1 or ph != 0 or pw != 0
        grid = self._aligned_grid(h, w, hq, wq) if padded else None
        hq, wq = grid or (hq, wq)
        offs = _tap_offsets(self.taps, s, hq, wq)
        operand, copies, interior = None, [], None
        if padded:
            buffer = torch.zeros(n * c * s * s * hq * wq)
            used = set(zip((ti % s).tolist(), (tj % s).tolist(), strict=True))
            for size, dst_strides, dst_off, src_strides, src_off in _phase_copies(
                n, c, h, w, s, (ph, pw), hq, wq, used
            ):
                view = torch.as_strided(buffer, size, dst_strides, dst_off)
                copies.append((view, size, src_strides, src_off))
            operand = buffer.numpy()
            if s == 1 and copies:  # no copies: an all-zero weight reads nothing
                interior = copies[0][0]
        work = len(self.vals) * n * ho * wo
        parallel = kernels.kernel_threads(threads, work) > 1
        length = (ho - 1) * wq + wo
        if self.pool:
            tiles = len(_pool_tiles(ho, wo, wq)[1]) - 1
            run = direct_conv_pool if parallel else direct_conv_pool_serial
        else:
            tiles = -(-length // kernels.TILE)
            run = direct_conv if parallel else direct_conv_serial
        # chunks of input channels whose operand window (a tile per copy plus the kernel's
        # reach, per phase) fits L1, as in the csr_numba kernel
        reach = int(offs.max() % (hq * wq)) if len(offs) else 0
        img = c * s * s * hq * wq
        shifts = np.zeros(0, dtype=np.int64)
        if grid is not None:
            # a tap reads the copy shifted by its offset's remainder, at a multiple of LANES:
            # every vector load of the kernel is aligned (one remainder, 0: no copy at all)
            found, which = _remainders(offs)
            if found.tolist() != [0]:
                shifts = found
                offs = offs - offs % LANES + which * _slot(img)
        per_column = (kernels.TILE * max(len(shifts), 1) + reach) * s * s / (kh * kw)
        scratch = _aligned_rows(max(threads, 1), len(shifts) * _slot(img))
        ptrs, order = _column_chunks(self.indptr, (tc * kh + ti) * kw + tj, c * kh * kw, per_column)
        # at least four items per thread where there are enough tiles (one block per image
        # on the calling thread)
        tile_block = tiles if not parallel else max(1, -(-tiles * n // (4 * threads)))
        tile_block = max(1, min(tile_block, tiles))
        geo = _Geometry(
            operand=operand,
            copies=copies,
            interior=interior,
            img=img,
            pitch=wq,
            length=length,
            tiles=tiles,
            ho=ho,
            wo=wo,
            ptrs=ptrs,
            vals=np.ascontiguousarray(self.vals[order]),
            offs=_offsets(offs[order]),
            tile_block=tile_block,
            parallel=parallel,
            scratch=scratch,
            shifts=shifts,
            run=run,
            stores={},
        )
        self._geo[key] = geo
        return geo

    def _aligned_grid(self, h: int, w: int, hq: int, wq: int) -> tuple[int, int] | None:
        """The operand grid ``(rows, row pitch)`` of the aligned layout (see the module
        docstring) for an ``h x w`` input whose plain grid is ``hq x wq``, or None where it
        does not pay: rows widened to a multiple of LANES, or else (stride 1, small maps) rows
        of ``w + pw`` floats whose right padding is the next row's left padding, as many rows
        as make a plane a multiple of LANES; the first of them whose positions per plane
        exceed the plain grid's by at most ``_MAX_ALIGN_WASTE`` and whose multiply-adds per
        copied float are at least ``_MIN_WORK_PER_COPIED``."""
        if self.aligned is False or (self.aligned is None and not _WIDE_VECTORS):
            return None
        s, (ph, pw) = self.stride[0], self.padding
        ho, wo = conv_out_size(h, w, self.kernel_size, self.stride, self.padding, self.dilation)
        grids = [(hq, -(-wq // LANES) * LANES)]
        if s == 1 and w + pw < wq:
            # one more row: the last row's reads past its end wrap into zeros of this plane
            step = LANES // math.gcd(w + pw, LANES)
            grids.append((-(-(h + 2 * ph + 1) // step) * step, w + pw))
        if self.aligned:
            return grids[0]
        plain = (ho - 1) * wq + wo
        for rows, pitch in grids:
            if rows > h + 2 * ph + 2:  # planes padded by rows that cost memory and cache
                continue
            length = (ho - 1) * pitch + wo
            img = self.in_channels * s * s * rows * pitch
            copies = len(_remainders(_tap_offsets(self.taps, s, rows, pitch))[0])
            work = len(self.vals) * length / (max(copies, 1) * img)
            if length <= _MAX_ALIGN_WASTE * plain and work >= _MIN_WORK_PER_COPIED:
                return rows, pitch
        return None

    def input_buffer(self, n: int, h: int, w: int) -> tuple[torch.Tensor, np.ndarray] | None:
        """Where the layer before may write this layer's ``[n, C, h, w]`` input instead of
        returning it: ``(NCHW view of the zero-padded operand's interior, the whole operand
        flat)``; None where the operand is no padded copy (no padding, or stride 2)."""
        geo = self._geometry(n, h, w)
        if geo.interior is None or geo.operand is None:
            return None
        return geo.interior, geo.operand

    def _consumer(self) -> DirectSparseConv | None:
        """The direct convolution that alone reads this layer's output, as installed now."""
        if self.next_layer is None:
            return None
        root, name = self.next_layer
        nxt = root.get_submodule(name)
        nxt = getattr(nxt, "exe", nxt)  # the profiler's timing slot runs the layer it holds
        if isinstance(nxt, DirectSparseConv) and nxt.in_channels == self.out_channels:
            return nxt
        return None

    def _output(self, n: int, ho: int, wo: int) -> tuple[torch.Tensor, np.ndarray]:
        """The output tensor, and the flat array the kernel writes it through."""
        consumer = self._consumer()
        if consumer is not None:
            into = consumer.input_buffer(n, ho, wo)
            if into is not None:
                return into
        y = torch.empty(n, self.out_channels, ho, wo)
        return y, y.numpy().reshape(-1)

    def _stores(self, geo: _Geometry, y: torch.Tensor) -> tuple[np.ndarray, ...]:
        if self.pool:
            return _pool_tiles(geo.ho, geo.wo, geo.pitch, int(y.stride(2)), y.storage_offset())
        return _row_segments(
            geo.length, geo.pitch, geo.wo, geo.tiles, geo.tile_block, int(y.stride(2)),
            y.storage_offset(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise PruneflowError(f"conv2d expects NCHW input, got shape {tuple(x.shape)}")
        check_f32(x)
        n, _, h, w = x.shape
        geo = self._geometry(n, h, w)
        inside = geo.interior
        if geo.operand is not None and inside is not None and _same_view(x, inside):
            operand = geo.operand  # the layer before wrote it in place
        elif geo.operand is None:
            operand = x.contiguous().numpy().reshape(-1)
        else:
            operand = geo.operand
            x = x.contiguous()
            for view, size, src_strides, src_off in geo.copies:
                view.copy_(x.as_strided(size, src_strides, src_off))
        ho, wo = (geo.ho // 2, geo.wo // 2) if self.pool else (geo.ho, geo.wo)
        y, target = self._output(n, ho, wo)
        if y.numel() == 0:  # a pooled output of a single row or column
            return y
        layout = (y.stride(2), y.storage_offset())
        known = geo.stores.get(layout)
        stores = self._stores(geo, y) if known is None else known[0]
        args = (
            geo.ptrs,
            geo.vals,
            geo.offs,
            operand,
            target,
            n,
            geo.img,
            *([] if self.pool else [geo.length]),
            *stores,
            y.stride(1),
            self.bias_np,
            self.lo,
            geo.tile_block,
            geo.scratch,
            geo.shifts,
        )
        if known is None:
            known = geo.stores[layout] = (stores, kernels.compiled(geo.run, args))
        known[1](*args)
        return y


def _same_view(x: torch.Tensor, view: torch.Tensor) -> bool:
    return x.data_ptr() == view.data_ptr() and x.shape == view.shape and x.stride() == view.stride()
