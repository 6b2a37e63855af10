"""Smoothing a layer's measured times over the grid levels.

Each table entry is a low quantile of a few noisy sweeps' runs. SPDY's DP and search look for the
levels that are cheapest for their error, so an entry that came out a few percent low (a quiet
moment of the host) is chosen more often than its neighbours, and the chosen profile runs slower
than predicted: a winner's curse that grows with the noise. A kernel's time is a smooth function of
its density (the numba kernel does work proportional to the nonzeros, plus a fixed cost), so
neighbouring levels measure nearly the same thing: a local linear fit in density over a few close
levels averages their independent errors, and a layer's time cannot rise when the sparsity does,
which a non-increasing fit (pool adjacent violators) enforces.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from pruneflow.errors import PruneflowError

__all__ = ["MAX_DENSITY_RATIO", "nonincreasing", "smooth_level_times"]

# Neighbours farther apart in density than this factor are not averaged: a line over a wide
# density range would bend the kink where the sparse kernel overtakes dense, and a coarse grid
# (4 levels from 50% to 95%) would be fitted by one line. The default grid's steps are a
# factor 1.1 apart, so a 5-level window spans 1.23x either way.
MAX_DENSITY_RATIO = 1.3


def nonincreasing(values: ArrayLike) -> np.ndarray:
    """The least-squares non-increasing fit of ``values`` (pool adjacent violators)."""
    v = np.asarray(values, dtype=np.float64)
    means: list[float] = []
    sizes: list[int] = []
    for x in v:
        means.append(float(x))
        sizes.append(1)
        while len(means) > 1 and means[-2] < means[-1]:
            n = sizes[-2] + sizes[-1]
            m = (means[-2] * sizes[-2] + means[-1] * sizes[-1]) / n
            means[-2:], sizes[-2:] = [m], [n]
    return np.repeat(np.asarray(means), sizes) if means else v.copy()


def _local_linear(x: np.ndarray, y: np.ndarray, window: int, max_ratio: float) -> np.ndarray:
    """At every point, the value there of the least-squares line through its neighbours: the
    points at most ``window // 2`` positions away whose ``x`` is within a factor
    ``max_ratio`` of its own (fewer at the ends and on coarse grids), kept within their
    range."""
    n = len(y)
    half = window // 2
    out = np.empty(n)
    for i in range(n):
        near = [
            j
            for j in range(max(0, i - half), min(n, i + half + 1))
            if x[i] / max_ratio <= x[j] <= x[i] * max_ratio
        ]
        xs, ys = x[near], y[near]
        xc = xs - xs.mean()
        denom = float(xc @ xc)
        slope = float(xc @ (ys - ys.mean())) / denom if denom > 0 else 0.0
        # a line through noisy points can overshoot them at the window's edge
        out[i] = np.clip(ys.mean() + slope * (x[i] - xs.mean()), ys.min(), ys.max())
    return out


def smooth_level_times(
    sparsity: ArrayLike, times: ArrayLike, window: int, max_ratio: float = MAX_DENSITY_RATIO
) -> np.ndarray:
    """One layer's times at its sparse levels, smoothed: a local linear fit in density over
    up to ``window`` neighbouring levels (centred; only those whose density is within a
    factor ``max_ratio`` of the level's own), then made non-increasing in sparsity.

    ``sparsity`` ascending (the grid's sparse levels, the dense level excluded), ``times`` the
    measured times there. ``window=1`` returns the measurements unchanged.
    """
    s = np.asarray(sparsity, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    if s.shape != t.shape or s.ndim != 1:
        raise PruneflowError(
            f"sparsity and times must be 1-D of one length, got {s.shape} and {t.shape}"
        )
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise PruneflowError(f"smoothing window must be an integer >= 1, got {window!r}")
    if window == 1 or len(t) < 2:
        return t.copy()
    if np.any(np.diff(s) <= 0):
        raise PruneflowError("sparse levels must be strictly ascending in sparsity")
    return nonincreasing(_local_linear(1.0 - s, t, window, max_ratio))
