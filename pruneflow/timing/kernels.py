"""Numba CPU kernel for unstructured-sparse layers (the ``csr_numba`` backend).

One kernel does all the arithmetic: a CSR weight ``W [R, K]`` times a dense operand stored
"feature-major" (one contiguous row per input feature), every output row accumulated in SIMD
registers along the contiguous dimension::

    y[o, q] = act(bias[o] + sum_p vals[p] * x[offs[p] + q])      for q in [0, L)

``offs[p]`` is the flat offset of nonzero ``p``'s operand row, so the same kernel serves

- **Linear**: ``x = X^T [K, B]`` and ``offs = column * B``: the batch is the SIMD dimension;
- **Conv2d, stride 1** (any kernel size, padding, dilation): ``x`` is the zero-padded input,
  e.g. ``[C, N, Hp, Wp]`` with ``offs = c * N*Hp*Wp + i*dh*Wp + j*dw``. A weight tap
  ``(c, i, j)`` is a constant shift of the flat padded image, so there is no im2col: output
  pixel ``(n, h, w)`` sits at ``q = n*Hp*Wp + h*Wp + w`` of a grid with the padded row pitch
  whose few junk columns the caller drops when copying to NCHW (``[C, Hp, Wp, N]`` works
  the same way with every offset times ``N``);
- **Conv2d, stride > 1**: an im2col matrix ``[C*kh*kw, N*Ho*Wo]`` and ``offs = row * pitch``.

The layout copies around the kernel are left to torch's strided ``copy_``, which runs them
near memory speed (numba loops over 4-D indices were 4-5x slower there).

Why an intrinsic: in a plain numba loop ``y[i, :] += w * x[j, :]`` LLVM keeps ``y[i, :]`` in
memory (it cannot prove ``x`` and ``y`` do not alias) and guards accesses with wraparound
checks; that was slower than MKL's dense GEMM even at 95% sparsity. The inner loop is
therefore emitted as LLVM vector IR: up to four accumulators of 16 float32 lanes stay in
registers for a whole output row segment, each nonzero costs a broadcast plus one unaligned
load and one FMA per accumulator. On AVX-512 (Zen 4) a 64-wide tile runs at L1/L2 speed;
on AVX2 LLVM splits each 16-lane vector in two.

Nonzeros may be grouped by column chunk (``indptr`` is ``[chunks, R + 1]``): the kernel
sweeps the chunks in turn, adding into ``y`` (see ``numba_layers._column_chunks``).

Compiled with ``cache=True``: the first call in a fresh environment compiles (seconds),
later processes load the cached machine code; and ``parallel=True``: the thread count is
numba's (``numba.set_num_threads``); with one thread the loop runs on the calling thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 16  # float32 lanes per vector; LLVM maps a 16-lane vector to one zmm or two ymm
TILE = 4 * LANES  # columns per register tile of the main loop

_JIT = {"cache": True, "nogil": True, "fastmath": True, "error_model": "numpy"}


def _make_accumulate(nvec: int, split: int, lanes: int = LANES):
    """An intrinsic computing one output row segment of ``nvec * lanes`` columns.

    ``split`` independent accumulator sets take the nonzeros in turn (unrolled): with fewer
    than four vectors per row a single set would be bound by the FMA latency, not its
    throughput (short rows: small batches, segment tails). ``carry``: start from the
    segment's current ``y`` (a later column chunk) instead of zero.
    """

    @intrinsic
    def accumulate(typingctx, vals, offs, start, stop, x, xq, y, yq, bias, lo, carry):
        sig = types.void(
            vals,
            offs,
            types.intp,
            types.intp,
            x,
            types.intp,
            y,
            types.intp,
            types.float32,
            types.float32,
            types.boolean,
        )

        def codegen(context, builder, sg, args):
            vals_v, offs_v, start, stop, x_v, xq, y_v, yq, bias, lo, carry = args
            vals_a = context.make_array(sg.args[0])(context, builder, vals_v)
            offs_a = context.make_array(sg.args[1])(context, builder, offs_v)
            x_a = context.make_array(sg.args[4])(context, builder, x_v)
            y_a = context.make_array(sg.args[6])(context, builder, y_v)
            vec = ir.VectorType(ir.FloatType(), lanes)
            vec_ptr = vec.as_pointer()
            i32 = ir.IntType(32)
            intp = start.type
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fma.v{lanes}f32"
            )
            undef = ir.Constant(vec, ir.Undefined)
            zero_mask = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
            zero = ir.Constant(vec, [0.0] * lanes)

            def splat(scalar):
                one = builder.insert_element(undef, scalar, ir.Constant(i32, 0))
                return builder.shuffle_vector(one, undef, zero_mask)

            # allocas land in the entry block, where mem2reg turns them into registers
            accs = [
                [cgutils.alloca_once_value(builder, zero) for _ in range(nvec)]
                for _ in range(split)
            ]
            ybase = builder.gep(y_a.data, [yq])
            # a branch, not a select: without carry the segment's old content is not loaded
            # (a tile's worth of loads per call, up to a sixth of them at 99% sparsity)
            with builder.if_else(carry) as (then, otherwise):
                with then:
                    for k, acc in enumerate(accs[0]):
                        at = builder.gep(ybase, [ir.Constant(intp, k * lanes)])
                        builder.store(builder.load(builder.bitcast(at, vec_ptr), align=4), acc)
                with otherwise:
                    for acc in accs[0]:
                        builder.store(zero, acc)
            for acc in (a for group in accs[1:] for a in group):
                builder.store(zero, acc)
            xbase = builder.gep(x_a.data, [xq])

            def step(p, group):
                w = splat(builder.load(builder.gep(vals_a.data, [p])))
                off = builder.load(builder.gep(offs_a.data, [p]))
                if off.type.width < intp.width:  # int32 offsets halve the index traffic
                    off = builder.sext(off, intp)
                row = builder.gep(xbase, [off])
                for k, acc in enumerate(group):
                    ptr = builder.bitcast(builder.gep(row, [ir.Constant(intp, k * lanes)]), vec_ptr)
                    v = builder.load(ptr, align=4)
                    builder.store(builder.call(fma, [v, w, builder.load(acc)]), acc)

            count = builder.sub(stop, start)
            main_stop = builder.add(
                start,
                builder.mul(
                    builder.sdiv(count, ir.Constant(intp, split)), ir.Constant(intp, split)
                ),
            )
            with cgutils.for_range_slice(builder, start, main_stop, ir.Constant(intp, split)) as (
                p,
                _,
            ):
                for s, group in enumerate(accs):
                    step(builder.add(p, ir.Constant(intp, s)), group)
            with cgutils.for_range_slice(builder, main_stop, stop, ir.Constant(intp, 1)) as (p, _):
                step(p, accs[0])

            bias_v, lo_v = splat(bias), splat(lo)
            for k in range(nvec):
                a = builder.load(accs[0][k])
                for group in accs[1:]:
                    a = builder.fadd(a, builder.load(group[k]))
                a = builder.fadd(a, bias_v)
                a = builder.select(builder.fcmp_ordered(">", a, lo_v), a, lo_v)
                ptr = builder.bitcast(builder.gep(ybase, [ir.Constant(intp, k * lanes)]), vec_ptr)
                builder.store(a, ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return accumulate


_acc4 = _make_accumulate(4, 1)
_acc3 = _make_accumulate(3, 2)
_acc2 = _make_accumulate(2, 2)
_acc1 = _make_accumulate(1, 4)
_acc_half = _make_accumulate(1, 4, LANES // 2)  # batch 8, or an 8-wide tail


@njit(inline="always", **_JIT)
def _row_segment(indptr, vals, offs, x, y, ly, o, q0, q1, b, lo, carry):
    """Columns ``[q0, q1)`` of output row ``o``: full tiles, a partial tile, 8 lanes, scalars."""
    start, stop = indptr[o], indptr[o + 1]
    q = q0
    while q + TILE <= q1:
        _acc4(vals, offs, start, stop, x, q, y, o * ly + q, b, lo, carry)
        q += TILE
    rest = (q1 - q) // LANES
    if rest == 3:
        _acc3(vals, offs, start, stop, x, q, y, o * ly + q, b, lo, carry)
    elif rest == 2:
        _acc2(vals, offs, start, stop, x, q, y, o * ly + q, b, lo, carry)
    elif rest == 1:
        _acc1(vals, offs, start, stop, x, q, y, o * ly + q, b, lo, carry)
    q += rest * LANES
    if q + LANES // 2 <= q1:
        _acc_half(vals, offs, start, stop, x, q, y, o * ly + q, b, lo, carry)
        q += LANES // 2
    while q < q1:
        a = y[o * ly + q] if carry else np.float32(0.0)
        for p in range(start, stop):
            a += vals[p] * x[offs[p] + q]
        a += b
        y[o * ly + q] = a if a > lo else lo
        q += 1


# Multiply-adds (nonzeros times output columns) below which one thread beats two: a numba
# parallel region's fork/join costs tens of microseconds, as much as ~1e6 multiply-adds of the
# kernel, and on a shared host the second worker often starts late. Measured: mlp1024 at 95%
# (about 3e6 per layer at batch 64) ran slower on 2 threads than on 1.
PARALLEL_MIN_WORK = 4_000_000


def compiled(kernel: Callable[..., None], args: Sequence[object]) -> Callable[..., None]:
    """``kernel``'s machine code for the types of ``args``, called without numba's dispatch.

    A numba dispatcher works out every argument's type on every call before it picks the
    compiled function; a layer calls its kernel with arguments of the same types every time,
    so it resolves them once per geometry (about 2 us a call: a trivial direct convolution
    took 4.9-6.4 us through the dispatcher, 2.3-4.4 through its entry point, loaded AVX2
    host). The entry point converts each
    argument but does not check an array's dtype or layout again, so a caller passes arrays
    of exactly the types it resolved for (its geometry's own, made the same way every call).
    """
    return kernel.compile(tuple(numba.typeof(a) for a in args))


def parallel_worthwhile(work: int) -> bool:
    """Whether ``work`` multiply-adds are worth splitting over numba's threads."""
    return work >= PARALLEL_MIN_WORK


def kernel_threads(threads: int, work: int) -> int:
    """The threads a kernel of ``work`` multiply-adds runs on, of numba's ``threads``: all of
    them where splitting pays (:func:`parallel_worthwhile`), else 1 (the calling thread), which
    is also what its blocking must assume."""
    return threads if threads > 1 and parallel_worthwhile(work) else 1


@njit(inline="always", **_JIT)
def _spmm_item(indptr, vals, offs, x, y, ly, bias, lo, col_block, row_block, item, nrb):
    nchunks = indptr.shape[0]
    nrows = indptr.shape[1] - 1
    no_act = np.float32(-np.inf)
    cb = item // nrb
    rb = item - cb * nrb
    q0 = cb * col_block
    q1 = min(q0 + col_block, ly)
    for c in range(nchunks):
        last = c == nchunks - 1
        for o in range(rb * row_block, min((rb + 1) * row_block, nrows)):
            b = bias[o] if last else np.float32(0.0)
            _row_segment(
                indptr[c], vals, offs, x, y, ly, o, q0, q1, b, lo if last else no_act, c > 0
            )


@njit(parallel=True, **_JIT)
def spmm(indptr, vals, offs, x, y, ly, bias, lo, col_block, row_block):
    """``y[o, q] = max(bias[o] + sum_p vals[p] x[offs[p] + q], lo)`` for ``q < ly``.

    ``x``, ``y`` are flat float32 arrays (``y`` holds ``R`` rows of ``ly``). ``indptr`` is
    ``[chunks, R + 1]``: the nonzeros grouped by column chunk, then by row (one chunk is
    plain CSR). Chunks are accumulated one after the other into ``y``, so that the operand
    rows of one chunk stay in L1 while every output row uses them; bias and activation come
    with the last chunk. Work items are (column block, row block) pairs, column block
    outermost so that the rows sharing an operand block run back to back on one thread.
    """
    nrows = indptr.shape[1] - 1
    ncb = (ly + col_block - 1) // col_block
    nrb = (nrows + row_block - 1) // row_block
    for item in prange(ncb * nrb):
        _spmm_item(indptr, vals, offs, x, y, ly, bias, lo, col_block, row_block, item, nrb)


@njit(**_JIT)
def spmm_serial(indptr, vals, offs, x, y, ly, bias, lo, col_block, row_block):
    """:func:`spmm` on the calling thread (work too small to pay a fork/join)."""
    nrows = indptr.shape[1] - 1
    ncb = (ly + col_block - 1) // col_block
    nrb = (nrows + row_block - 1) // row_block
    for item in range(ncb * nrb):
        _spmm_item(indptr, vals, offs, x, y, ly, bias, lo, col_block, row_block, item, nrb)


@njit(**_JIT)
def transpose_into(x, y):
    """``y[k, b] = x[b, k]``: a row-major ``[B, K]`` batch into the ``[K, B]`` operand of
    :func:`spmm`. Row by row of ``y`` (contiguous stores, the batch's rows read in step): on
    smallcnn fc1's input (16 x 12544) 0.065 ms against torch's 0.19 ms for
    ``x.t().contiguous()`` (one AVX2 thread)."""
    rows, cols = x.shape
    for k in range(cols):
        for b in range(rows):
            y[k, b] = x[b, k]


def transpose_fits_l1(rows: int, cols: int) -> bool:
    """Whether :func:`transpose_into` suits a contiguous float32 ``[rows, cols]`` batch: the
    rows it reads in step start ``4 * cols`` bytes apart, and where that stride shares many
    factors of two with the 4 KiB a set of L1 spans, they crowd into few cache sets and evict
    each other (64 x 1024: 0.21 ms against torch's 0.05). Allowed up to 4 rows per set."""
    return rows * math.gcd(4 * cols, 4096) <= 4 * 4096
