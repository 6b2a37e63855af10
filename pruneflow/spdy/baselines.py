"""One-shot baseline profiles at exactly SPDY's discretized time budget.

All three take the integer times ``[L, |S|]`` and the budget from
:func:`pruneflow.spdy.dp.discretize`, so they compete with SPDY under the very same constraint
(``sum_l times[l, level_l] <= budget``), and return one level index per prunable layer
(``np.ndarray`` of int64).

- :func:`uniform_profile`: the same level for every layer, the least sparse one that fits.
- :func:`global_magnitude_profile`: one magnitude threshold over all layers' dense weights,
  the lowest whose grid-snapped per-layer sparsities fit.
- :func:`prior_profile`: the DP with ``c = 1``, i.e. SPDY's error prior alone (the authors'
  ``dpsolve``).

Global magnitude: threshold, snapping and the search
----------------------------------------------------
A threshold ``tau`` prunes every weight with ``|w| <= tau`` (``tau = -inf`` prunes nothing).
Layer ``l`` then has sparsity ``p_l(tau) = #{|w_l| <= tau} / n_l`` (float64 division), and is
**snapped up**: to the lowest grid level ``i`` with ``grid[i] >= p_l(tau)``, so the layer is
at least as sparse as the threshold makes it. A sparsity above the grid's last level (only
possible when that level is below 1) snaps to the last level. The snapped level is
non-decreasing in ``tau``.

The time of the snapped profile is *not* monotone in ``tau`` in general: measured sparse
kernels are often slower than dense at low sparsity (the DeepSparse timings SPDY used are too),
so one layer's step up a level can add time. A binary search over thresholds would then find *a*
threshold at the budget's crossing, not the lowest. Instead we sweep all the points where the
profile changes, which is exact without any monotonicity and cheaper than sorting all weights:
layer ``l`` reaches level ``i >= 1`` exactly when its pruned count exceeds ``grid[i-1] * n_l``,
i.e. at ``tau = `` the ``c``-th smallest ``|w_l|`` for the least count ``c`` with
``c / n_l > grid[i-1]``. These ``L * (|S| - 1)`` order statistics come from one
``np.partition`` per layer; sorting them and a cumulative sum of the time changes gives the
profile's time at every breakpoint, and the first breakpoint within budget is the answer. With
times non-increasing in the level (each level at least as fast as the one below), the time is
monotone in ``tau`` and this is the same threshold a binary search would find.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from pruneflow.errors import PruneflowError
from pruneflow.spdy.dp import DPSolver, _as_bucket_times, _as_budget
from pruneflow.spdy.search import errors_from_c

__all__ = [
    "GlobalMagnitude",
    "global_magnitude_profile",
    "global_magnitude_search",
    "magnitude_levels",
    "prior_profile",
    "uniform_profile",
]


def _times_budget(times: ArrayLike, budget: int) -> tuple[np.ndarray, int]:
    # The DP's own validation. Entries above the budget come back clipped to budget + 1:
    # infeasible either way, and no sum can overflow.
    b = _as_budget(budget)
    return _as_bucket_times(times, b), b


def uniform_profile(times: ArrayLike, budget: int) -> np.ndarray:
    """The lowest level index ``s`` with ``sum_l times[l, s] <= budget``, for every layer.

    Raises :class:`PruneflowError` if no single level fits.
    """
    t, b = _times_budget(times, budget)
    totals = t.sum(axis=0)
    fits = np.flatnonzero(totals <= b)
    if fits.size == 0:
        best = int(np.argmin(totals))
        raise PruneflowError(
            f"no uniform profile fits the budget of {b} time buckets: the fastest uniform "
            f"level ({best}) takes {int(totals[best])}; lower the target speedup"
        )
    return np.full(t.shape[0], int(fits[0]), dtype=np.int64)


def prior_profile(solver: DPSolver) -> np.ndarray:
    """The DP's profile for ``c = 1``: the error prior ``(i / (|S| - 1))**2`` alone."""
    n_layers, n_levels = solver.shape
    return solver.solve(errors_from_c(np.ones(n_layers), n_levels)).levels


# --------------------------------------------------------------------------------------------
# Global magnitude


class GlobalMagnitude(NamedTuple):
    """``levels`` int64 [L]; ``threshold``: weights with ``|w| <= threshold`` are pruned
    (``-inf``: none); ``sparsities`` float64 [L]: each layer's sparsity under the threshold,
    before snapping; ``time``: the profile's time in buckets."""

    levels: np.ndarray
    threshold: float
    sparsities: np.ndarray
    time: int


def _grid(grid: Sequence[float], n_levels: int | None = None) -> np.ndarray:
    try:
        g = np.asarray(grid, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PruneflowError(f"grid must be a list of sparsities: {exc}") from exc
    if g.ndim != 1 or g.size < 1:
        raise PruneflowError(f"grid must be a non-empty list of sparsities, got shape {g.shape}")
    if n_levels is not None and g.size != n_levels:
        raise PruneflowError(
            f"grid has {g.size} levels but times has {n_levels} columns; they must match"
        )
    if not (np.isfinite(g).all() and g.min() >= 0.0 and g.max() <= 1.0):
        raise PruneflowError(f"grid sparsities must lie in [0, 1], got {g.tolist()}")
    if (np.diff(g) <= 0).any():
        raise PruneflowError(f"grid sparsities must strictly increase, got {g.tolist()}")
    return g


def _abs_weights(weights: Sequence[Any], n_layers: int | None = None) -> list[np.ndarray]:
    if isinstance(weights, np.ndarray) or not isinstance(weights, Sequence):
        raise PruneflowError("weights must be a list with one weight tensor per prunable layer")
    if n_layers is not None and len(weights) != n_layers:
        raise PruneflowError(
            f"got weights for {len(weights)} layers but times has {n_layers} rows; pass the "
            f"dense weights of exactly the prunable layers, in layer order"
        )
    out = []
    for layer, w in enumerate(weights):
        if hasattr(w, "detach"):  # torch tensor, without importing torch here
            # .double(): numpy has no bfloat16, and float64 holds every float16/32 exactly.
            w = w.detach().cpu().double().numpy()
        a = np.asarray(w)
        real = np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
        if a.size == 0 or not real:
            raise PruneflowError(
                f"weights[{layer}] must be a non-empty real tensor, got dtype {a.dtype}, "
                f"{a.size} elements"
            )
        # float64 holds every float16/32 value exactly, so thresholds compare without rounding.
        a = np.abs(a.astype(np.float64, copy=False)).ravel()
        if not np.isfinite(a).all():
            raise PruneflowError(f"weights[{layer}] contains NaN or inf")
        out.append(a)
    return out


def _snap(sparsity: np.ndarray, grid: np.ndarray) -> np.ndarray:
    # Lowest level at or above the sparsity; beyond the last level, the last level.
    return np.minimum(np.searchsorted(grid, sparsity, side="left"), grid.size - 1).astype(np.int64)


def magnitude_levels(
    weights: Sequence[Any], grid: Sequence[float], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Snapped levels and raw sparsities when pruning ``|w| <= threshold`` in every layer."""
    g = _grid(grid)
    absw = _abs_weights(weights)
    sp = np.array([np.count_nonzero(a <= threshold) / a.size for a in absw], dtype=np.float64)
    return _snap(sp, g), sp


def _min_count_above(g: float, n: int) -> int:
    """Least integer ``c`` with ``c / n > g`` in float64 (``n + 1`` if none up to ``n``)."""
    c = max(0, math.floor(g * n) - 1)  # float rounding of g * n is far below 2 counts
    while c <= n and not c / n > g:
        c += 1
    return c


def global_magnitude_search(
    weights: Sequence[Any], grid: Sequence[float], times: ArrayLike, budget: int
) -> GlobalMagnitude:
    """The lowest global magnitude threshold whose snapped profile fits the budget.

    See the module docstring for the threshold, the snapping rule and the exact sweep.
    Raises :class:`PruneflowError` if even pruning every weight (every layer at the last
    level) does not fit.
    """
    t, b = _times_budget(times, budget)
    n_layers, n_levels = t.shape
    g = _grid(grid, n_levels)
    absw = _abs_weights(weights, n_layers)

    taus, layers, deltas = [], [], []
    for layer, a in enumerate(absw):
        n = a.size
        counts = [_min_count_above(float(x), n) for x in g[:-1]]  # reach level i = 1 .. |S|-1
        reachable = [i for i, c in enumerate(counts, start=1) if c <= n]
        if not reachable:
            continue
        kth = sorted({counts[i - 1] - 1 for i in reachable})
        part = np.partition(a, kth)
        for i in reachable:
            taus.append(float(part[counts[i - 1] - 1]))
            layers.append(layer)
            deltas.append(int(t[layer, i]) - int(t[layer, i - 1]))

    rows = np.arange(n_layers)
    time0 = int(t[:, 0].sum())
    if time0 <= b:
        levels = np.zeros(n_layers, dtype=np.int64)
        return GlobalMagnitude(levels, -math.inf, np.zeros(n_layers), time0)

    tau_arr = np.asarray(taus, dtype=np.float64)
    order = np.argsort(tau_arr, kind="stable")
    tau_sorted = tau_arr[order]
    total = time0 + np.cumsum(np.asarray(deltas, dtype=np.int64)[order])
    # The profile at a threshold includes every breakpoint up to it, ties included: check
    # only the last event of each group of equal thresholds.
    last_of_group = np.append(tau_sorted[1:] != tau_sorted[:-1], True)
    ok = np.flatnonzero(last_of_group & (total <= b))
    if ok.size == 0:
        final = int(total[-1]) if total.size else time0
        raise PruneflowError(
            f"no global magnitude threshold fits the budget of {b} time buckets: even every "
            f"layer at its sparsest reachable level takes {final}; lower the target speedup"
        )
    tau = float(tau_sorted[ok[0]])
    levels, sp = magnitude_levels(absw, g, tau)
    time = int(t[rows, levels].sum())
    assert time == int(total[ok[0]]), "breakpoint sweep and direct snapping disagree"
    return GlobalMagnitude(levels, tau, sp, time)


def global_magnitude_profile(
    weights: Sequence[Any], grid: Sequence[float], times: ArrayLike, budget: int
) -> np.ndarray:
    """Levels of :func:`global_magnitude_search` (the dense prunable weights, in layer order)."""
    return global_magnitude_search(weights, grid, times, budget).levels
