"""Reference reconstructions the database is measured against (tests and ``bench/recondb.py``).

- :func:`magnitude_prune`: zero the ``ceil(s * numel)`` smallest ``|w|`` of the layer, no
  reconstruction (ties broken by position, so the count is exact).
- :func:`masked_least_squares`: keep a given mask and re-fit the kept weights of every row
  exactly for ``(w' - w)^T H (w' - w)``: ``w'_K = w_K + H_KK^-1 H_KP w_P``. Rows are solved in
  groups of similar kept counts, padded with identity blocks, as batched Cholesky solves.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pruneflow.recon.solve import zeros_for


def magnitude_mask(weight: Tensor, sparsity: float) -> Tensor:
    """Keep-mask (True = kept) with exactly ``ceil(s * numel)`` False, smallest ``|w|`` first."""
    flat = weight.detach().abs().flatten()
    k = zeros_for(sparsity, flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.sort(flat, stable=True).indices[:k]] = False
    return keep.view_as(weight)


def magnitude_prune(weight: Tensor, sparsity: float) -> Tensor:
    return weight.detach() * magnitude_mask(weight, sparsity)


def masked_least_squares(weight: Tensor, keep: Tensor, hessian: Tensor, group: int = 64) -> Tensor:
    """Per-row exact least squares of the kept weights for the (dampened, dense) ``hessian``."""
    w = weight.detach().flatten(1).to(torch.float64)
    mask = keep.flatten(1)
    h = hessian.to(torch.float64)
    rows, d = w.shape
    out = w * mask
    kept = mask.sum(1)
    by_count = torch.argsort(kept, stable=True)
    for g0 in range(0, rows, group):
        sel = by_count[g0 : g0 + group]
        kmax = int(kept[sel].max())
        if kmax == 0:
            continue
        # kept positions first (in column order), then padding that points at column 0
        order = torch.argsort((~mask[sel]).to(torch.uint8), dim=1, stable=True)[:, :kmax]
        valid = torch.arange(kmax)[None, :] < kept[sel][:, None]
        idx = torch.where(valid, order, torch.zeros_like(order))
        a = h[idx[:, :, None], idx[:, None, :]]
        pair = valid[:, :, None] & valid[:, None, :]
        eye = torch.eye(kmax, dtype=torch.float64).expand_as(a)
        a = torch.where(pair, a, eye)
        rhs = (h[idx] @ (w[sel] * ~mask[sel])[:, :, None]).squeeze(2) * valid
        delta = torch.cholesky_solve(rhs[:, :, None], torch.linalg.cholesky(a)).squeeze(2)
        new = w[sel].gather(1, idx) + delta
        block = out[sel]
        block.scatter_(1, torch.where(valid, idx, order), torch.where(valid, new, 0.0))
        out[sel] = block * mask[sel]
    return out.view_as(weight).to(weight.dtype)
