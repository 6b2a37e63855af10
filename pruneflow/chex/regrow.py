"""Regrowing pruned channels by importance sampling (CHEX Algorithm 3).

A pruned channel that the kept channels approximate badly carries something they lack, so it
is more likely to win a place at the next selection. Its orthogonal-projection error onto the
span of the kept channels' columns, ``||w_j - W_T (W_T^T W_T)^+ W_T^T w_j||^2``, is its sampling
weight; channels are drawn without replacement with probabilities proportional to it.
"""

from __future__ import annotations

import torch

from pruneflow.chex.css import gram_matrix


def projection_errors(
    matrix: torch.Tensor,
    kept: torch.Tensor,
    candidates: torch.Tensor,
    gram: torch.Tensor | None = None,
) -> torch.Tensor:
    """Squared distance of each candidate column of ``matrix`` from the span of the kept ones.

    ``kept`` and ``candidates`` are column indices. With ``G = W^T W``, expanding
    ``||w_j - W_T (W_T^T W_T)^+ W_T^T w_j||^2`` gives ``G_jj - G_jT (G_TT)^+ G_Tj``: the same
    number from column-by-column matrices only (cheap for tall conv weights). The
    pseudo-inverse keeps it right when the kept columns are rank deficient.
    """
    gram = gram_matrix(matrix) if gram is None else gram
    diag = gram.diagonal()[candidates]
    if kept.numel() == 0:
        return diag.to(matrix.dtype)
    cross = gram[kept][:, candidates]
    explained = (cross * (torch.linalg.pinv(gram[kept][:, kept], hermitian=True) @ cross)).sum(0)
    # the subtraction cancels for candidates inside the span: clamp round-off below zero
    return (diag - explained).clamp_min(0.0).to(matrix.dtype)


def regrow_probabilities(errors: torch.Tensor) -> torch.Tensor:
    """Sampling probabilities proportional to ``errors`` (uniform when all are zero)."""
    weights = torch.nan_to_num(errors.detach().double(), nan=0.0).clamp_min(0.0)
    total = weights.sum()
    if weights.numel() == 0:
        return weights
    if total <= 0:
        return torch.full_like(weights, 1.0 / weights.numel())
    return weights / total


def sample_regrow(
    errors: torch.Tensor, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` distinct positions of ``errors`` drawn with probability proportional to them.

    Positions of zero weight are drawn (uniformly) only once every positive one is taken.
    """
    n = min(max(n, 0), errors.numel())
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    probs = regrow_probabilities(errors)
    positive = int((probs > 0).sum())
    if positive >= n:
        return torch.multinomial(probs, n, replacement=False, generator=generator)
    chosen = probs.nonzero().flatten()
    rest = (probs == 0).nonzero().flatten()
    extra = rest[torch.randperm(rest.numel(), generator=generator)[: n - positive]]
    return torch.cat([chosen, extra])
