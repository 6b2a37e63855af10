"""Exact layer-wise OBS (OBC's ExactOBS): every sparsity level of a layer from one greedy pass.

The layer objective ``sum_rows (w - w')^T H (w - w')`` separates over output rows. For one row,
with ``G = H^-1`` restricted to the still-active weights, OBS removes
``p = argmin_q w_q^2 / G_qq`` at a loss increment ``w_p^2 / (2 G_pp)``, moves the other weights
by ``-(w_p / G_pp) G[p, :]`` (which zeroes ``w_p`` and is the exact least-squares optimum given
the removed set), and eliminates ``p`` from ``G``: ``G <- G - G[:, p] G[p, :] / G_pp``.

Written with ``l_t = G_t[p_t, :] / sqrt(G_t[p_t, p_t])`` and ``z_t = w_p / sqrt(G_pp)``, the
eliminations are the columns of a Cholesky factor of ``G`` in removal order (a pivoted Cholesky
whose pivot rule is the OBS saliency): ``G_t = G - sum_{s<t} l_s l_s^T``, the weights after
``r`` removals are ``w - sum_{t<r} z_t l_t`` and the loss increments are ``z_t^2 / 2``. That
gives the two passes, which never hold a per-step trace (``d_col + 1`` states per row, 43.5 GB
for an RN50 layer4 conv):

1. ``greedy_order`` (float32 by default): find each row's removal order and increments. Rows
   are batched (each with its own copy of the active block of ``G``: ``B x d x d`` floats, the
   memory cap ``batch_bytes`` sets ``B``); inside a batch the rank-1 eliminations are *lazy*:
   a step needs only row ``p`` of the current ``G`` and its diagonal, so the last ``block``
   columns ``l`` are applied on the fly (``O(block * d)``) and folded into the batch's
   matrices every ``block`` steps as one batched rank-``block`` GEMM. That replaces ``d``
   memory-bound rank-1 passes over ``B x d x d`` floats (OBC's scheme) by ``d / block``
   compute-bound ones; the matrices are compacted to the still-active weights whenever those
   fall to 70% of the allocated size. Pivots are floored at ``1 / H_pp``, a true lower bound
   of every diagonal entry of an inverse sub-block, so float32 cancellation can never produce
   a zero or negative pivot. The step loop runs on one CPU thread (tiny ops).
2. ``select_counts``: a global ascending sort of the increments of the whole layer; a level
   with ``k = ceil(s * numel)`` zeros takes row ``i``'s first ``r_i`` removals, ``r_i`` being
   how many of the ``k`` smallest entries are row ``i``'s. Increments are made monotone per row
   first (running maximum) so that the ``k`` smallest entries of every row are a prefix of its
   removal order; OBS increments are usually but not always increasing, and without this a
   row's count could include a cheap late step but pay for an expensive earlier one.
3. ``snapshot_levels``: with the orders fixed, the eliminations are a Cholesky factorization
   of the row's permuted ``P G P^T``, done left-looking and blocked (64 pivots at a time, no
   per-step work), and only the states at the counts the levels need are formed. Memory: the
   ``l`` vectors of a row batch on the still-active columns (at most ``B x d x d/2`` floats)
   plus the result, ``O(levels * rows * d)``. Its increments are the ones reported, so
   ``sum_{t<r} inc_t`` equals ``1/2 dw^T H dw`` of the stored row (to float32 rounding with the
   default ``row_dtype``: measured 3e-6 relative on smallcnn's conv5, weights within 5e-6 of a
   float64 replay and rel_error within 1e-8).

Levels are nested: a larger ``k`` takes a superset of the smallest increments, so every row's
count grows with the level and each level's removed set contains the previous level's (the
kept weights still differ: each level is re-solved exactly on its own mask).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pruneflow.errors import PruneflowError
from pruneflow.recon._common import single_thread


def greedy_order(
    weight: Tensor,
    ginv: Tensor,
    hdiag: Tensor,
    *,
    dtype: torch.dtype = torch.float32,
    rows_per_batch: int = 64,
    block: int = 32,
    compact_at: float = 0.7,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Greedy OBS removal order and loss increments of every row (pass 1).

    ``weight`` (rows x d), ``ginv = H^-1`` (d x d) and ``hdiag = diag(H)`` (d) are on the
    solver's device. Returns ``order`` (rows x d, int64 column indices in removal order) and
    ``increments`` (rows x d, float64, computed in ``dtype``).

    Per batch the rows' matrices are only compacted (a gather, slow next to a GEMM) once the
    active weights fall to ``compact_at`` of the allocated size; until then removed weights
    stay in place, marked by ``w = inf`` (score ``inf``), and the folds update them uselessly.
    That costs ~1.6x the flops of compacting at every fold but a fraction of its gathers.
    """
    rows, d = weight.shape
    dev = weight.device
    g = ginv.to(dtype)
    floor_all = (1.0 / hdiag).to(dtype)
    order = torch.empty(rows, d, dtype=torch.long, device=dev)
    incs = torch.empty(rows, d, dtype=torch.float64, device=dev)
    for r0 in range(0, rows, rows_per_batch):
        r1 = min(rows, r0 + rows_per_batch)
        nb = r1 - r0
        ar = torch.arange(nb, device=dev)
        w = weight[r0:r1].to(dtype).clone()
        dg = g.diagonal().expand(nb, d).clone()
        floor = floor_all.expand(nb, d)
        idx = torch.arange(d, device=dev).expand(nb, d)
        flat = g  # rows of the per-row matrices, viewed as (nb * size, size); G itself at first
        base = torch.zeros_like(ar)  # first row of each batch row's matrix in ``flat``
        size, m, t = d, d, 0  # allocated positions, active weights, removals so far
        while m > 0:
            nblk = min(block, m)
            lcols = torch.empty(nb, nblk, size, dtype=dtype, device=dev)
            zs = torch.empty(nb, nblk, dtype=dtype, device=dev)
            ps = torch.empty(nb, nblk, dtype=torch.long, device=dev)
            with single_thread(dev):  # many tiny ops: a second thread only adds sync cost
                for j in range(nblk):
                    p = w.square().div_(dg).argmin(1)
                    pc = p[:, None]
                    col = flat.index_select(0, base + p)
                    if j:
                        lp = lcols[:, :j].gather(2, p.view(nb, 1, 1).expand(nb, j, 1))
                        col.sub_(torch.bmm(lp.transpose(1, 2), lcols[:, :j]).squeeze(1))
                    rs = dg.gather(1, pc).rsqrt_()
                    lvec = lcols[:, j]
                    torch.mul(col, rs, out=lvec)
                    z = w.gather(1, pc).mul_(rs)
                    w.addcmul_(z, lvec, value=-1.0)
                    w.scatter_(1, pc, float("inf"))
                    dg.addcmul_(lvec, lvec, value=-1.0)
                    torch.maximum(dg, floor, out=dg)
                    zs[:, j] = z.squeeze(1)
                    ps[:, j] = p
            incs[r0:r1, t : t + nblk] = 0.5 * zs.double().square()
            order[r0:r1, t : t + nblk] = idx.gather(1, ps)
            t += nblk
            m -= nblk
            if m == 0:
                break
            # fold the block's eliminations into every row's matrix at once (one GEMM)
            if flat is g:
                s_mat = torch.baddbmm(g.expand(nb, d, d), lcols.transpose(1, 2), lcols, alpha=-1.0)
            else:
                s_mat = flat.view(nb, size, size)
                s_mat.baddbmm_(lcols.transpose(1, 2), lcols, alpha=-1.0)
            if m <= compact_at * size:
                keep = torch.argsort(torch.isinf(w).to(torch.uint8), dim=1, stable=True)[:, :m]
                w, dg, floor, idx = (v.gather(1, keep) for v in (w, dg, floor, idx))
                s_mat = s_mat[ar[:, None, None], keep[:, :, None], keep[:, None, :]]
                size = m
            flat = s_mat.reshape(nb * size, size)
            base = ar * size
        if on_batch is not None:
            on_batch(nb)
    return order, incs


def select_counts(increments: Tensor, zeros: Sequence[int]) -> Tensor:
    """Per-row removal counts (rows x levels) whose total is exactly ``zeros[level]``.

    A stable global sort of the row-wise running maximum of the increments; ties go to the
    lower row, then the earlier step, so the result is deterministic.
    """
    rows, d = increments.shape
    keys = torch.cummax(increments, dim=1).values.flatten()
    ranked = torch.sort(keys, stable=True).indices
    rank = torch.empty_like(ranked)
    rank[ranked] = torch.arange(ranked.numel(), device=ranked.device)
    ks = torch.tensor(list(zeros), dtype=rank.dtype, device=rank.device)
    return torch.searchsorted(rank.view(rows, d), ks.expand(rows, ks.numel()).contiguous())


def snapshot_levels(
    weight: Tensor,
    ginv: Tensor,
    order: Tensor,
    counts: Tensor,
    *,
    dtype: torch.dtype = torch.float64,
    rows_per_batch: int = 32,
    block: int = 64,
    compact_at: float = 0.7,
    name: str = "layer",
    on_batch: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Weights at each level's per-row count, replaying the known orders (pass 2).

    ``counts`` is (rows x levels). With the pivots known this is a left-looking blocked
    Cholesky of each row's permuted ``G``: for the next ``block`` pivots ``P``, the current
    rows are ``S[P, :] = G[P, :] - L[:, P]^T L`` (``L``: the ``l`` vectors so far, one GEMM),
    ``L_PP = chol(S[P, P])``, the block's ``l`` vectors are ``L_PP^-1 S[P, :]`` and
    ``z = L_PP^-1 w_P``; a state inside the block is ``w - sum_{i<c} z_i l_i``. No per-row
    ``d x d`` matrix is ever formed (``~d^3/3`` flops per row instead of ``~d^3`` for
    right-looking updates); ``L`` is kept on the still-active columns only, recompacted when
    they fall to ``compact_at`` of its width. Returns ``weights`` (levels x rows x d,
    ``dtype``, removed entries exactly 0) and ``increments`` (rows x d, float64, in removal
    order).
    """
    rows, d = weight.shape
    levels = counts.shape[1]
    dev = weight.device
    g = ginv.to(dtype)
    out = torch.zeros(levels, rows, d, dtype=dtype, device=dev)
    incs = torch.empty(rows, d, dtype=torch.float64, device=dev)
    eye = torch.eye(block, dtype=dtype, device=dev)
    for r0 in range(0, rows, rows_per_batch):
        r1 = min(rows, r0 + rows_per_batch)
        nb = r1 - r0
        ar = torch.arange(nb, device=dev)[:, None]
        cnt = counts[r0:r1]
        w = weight[r0:r1].to(dtype).clone()
        target = out[:, r0:r1].transpose(0, 1)  # (nb, levels, d) view of the result
        target[cnt == 0] = w[:, None, :].expand(nb, levels, d)[cnt == 0]
        idx = torch.arange(d, device=dev).repeat(nb, 1)  # position -> column
        pos = torch.arange(d, device=dev).repeat(nb, 1)  # column -> position
        gone = torch.zeros(nb, d, dtype=torch.bool, device=dev)
        size, t = d, 0
        # the l vectors so far, column-major (position x step): pivot rows gather contiguously
        cap = _steps_until_compaction(d, d, compact_at, block)
        lacc = torch.empty(nb, d, cap, dtype=dtype, device=dev)
        while t < d:
            nblk = min(block, d - t)
            cols = order[r0:r1, t : t + nblk]
            piv = pos.gather(1, cols)
            srows = g[cols[:, :, None], idx[:, None, :]]  # G[P, active]: (nb, nblk, size)
            if t:
                srows.baddbmm_(lacc[ar, piv, :t], lacc[:, :, :t].transpose(1, 2), alpha=-1.0)
            spp = srows.gather(2, piv[:, None, :].expand(-1, nblk, -1))
            lpp, info = torch.linalg.cholesky_ex(spp)
            if bool((info != 0).any()):
                raise PruneflowError(
                    f"layer '{name}': the inverse Hessian lost positive definiteness while "
                    "replaying the OBS order; raise damp"
                )
            # a small triangular inverse + GEMMs: batched trsm on CPU is several times slower
            eye_b = eye[:nblk, :nblk].expand(nb, -1, -1)
            linv = torch.linalg.solve_triangular(lpp, eye_b, upper=False)
            lrows = torch.bmm(linv, srows)
            z = torch.bmm(linv, w.gather(1, piv)[:, :, None])  # (nb, nblk, 1)
            incs[r0:r1, t : t + nblk] = 0.5 * z.squeeze(2).double().square()
            hit = (cnt > t) & (cnt <= t + nblk)  # levels whose count ends inside this block
            if bool(hit.any()):
                steps = torch.arange(nblk, device=dev)
                mask = (steps[None, None, :] < (cnt - t)[:, :, None]) & hit[:, :, None]
                snap = w[:, None, :] - torch.bmm(z.transpose(1, 2) * mask, lrows)
                full = torch.zeros(nb, levels, d, dtype=dtype, device=dev)
                full.scatter_(2, idx[:, None, :].expand(nb, levels, size), snap)
                target[hit] = full[hit]
            w.sub_(torch.bmm(z.transpose(1, 2), lrows).squeeze(1))
            w.scatter_(1, piv, 0.0)
            gone.scatter_(1, piv, True)
            lacc[:, :, t : t + nblk] = lrows.transpose(1, 2)
            t += nblk
            if t < d and d - t <= compact_at * size:
                keep = torch.argsort(gone.to(torch.uint8), dim=1, stable=True)[:, : d - t]
                size = d - t
                cap = t + _steps_until_compaction(size, size, compact_at, block)
                fresh = torch.empty(nb, size, min(cap, d), dtype=dtype, device=dev)
                fresh[:, :, :t] = lacc[ar, keep, :t]
                lacc = fresh
                w, idx, gone = (v.gather(1, keep) for v in (w, idx, gone))
                pos.scatter_(1, idx, torch.arange(size, device=dev).expand(nb, size))
        # removed entries exactly zero (the replay leaves rounding residue on them)
        rank = torch.empty_like(order[r0:r1])
        rank.scatter_(1, order[r0:r1], torch.arange(d, device=dev).expand(nb, d))
        target.masked_fill_(rank[:, None, :] < cnt[:, :, None], 0.0)
        if on_batch is not None:
            on_batch(nb)
    return out, incs


def _steps_until_compaction(size: int, active: int, compact_at: float, block: int) -> int:
    """Removals from now until the next compaction (which may overshoot by one block)."""
    return active - int(compact_at * size) + block
