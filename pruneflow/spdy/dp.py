"""Exact DP for SPDY's per-layer level choice, and the time discretization it runs on.

Problem (SPDY, Frantar & Alistarh, ICML 2022: the layer-wise level choice under a time budget
that its dynamic program solves): given, for every prunable layer ``l`` and level ``s``, an
error ``e[l, s]`` and an integer time ``t[l, s]`` (time buckets), choose one level per layer so
that ``sum_l t[l, s_l] <= T`` and ``sum_l e[l, s_l]`` is as small as possible.

Recurrence
----------
We solve the suffix, "time at most r" form of SPDY's dynamic program::

    F_L(r) = 0                                                    for 0 <= r <= T
    F_l(r) = min over s with t[l, s] <= r of  e[l, s] + F_{l+1}(r - t[l, s])
    optimum = F_0(T)

``F_l(r)`` is the least error layers ``l .. L-1`` can reach in at most ``r`` buckets. A prefix
table over *exact* time plus an argmin over its last row gives the same optimum, but an inner
loop ``t = t_l^s + 1 .. T`` over it never reads ``D[l-1, 0]`` and so loses every profile whose
first ``l-1`` layers take zero time (zero-time levels), which is why the authors' code treats
zero-time levels separately. Here ``r`` runs from ``t[l, s]`` (reading ``F_{l+1}(0)``), and
zero-time levels need no special case.

Tie rule
--------
Among all feasible profiles with the least total error, :func:`solve` returns the
*lexicographically smallest* level vector: the lowest level index (= lowest sparsity) for layer
0; among those, the lowest for layer 1; and so on. Earlier layers, in the order given, win the
ties, so they stay denser. Back-tracking from layer 0 picks, at each layer, the lowest level
whose ``e + F_{l+1}(rest)`` equals ``F_l(r)``. That is exactly this rule, because ``F_{l+1}``
is the optimum of the remaining layers.

Floating point
--------------
"Least total error" means least under float64 addition in one fixed order. The returned
``total_error`` is ``e[0, s_0] + (e[1, s_1] + (... + e[L-1, s_{L-1}]))``, i.e. summed from the
last layer backwards. Rounding is monotone, so ``F_0(T)`` is exactly the least such sum over
all feasible profiles. Back-tracking recomputes the same additions and so compares bit-exactly.
The solver is therefore exact and deterministic in float64, ties included. ``np.sum`` over the
chosen errors may differ from ``total_error`` in the last bits. A brute force that sums in the
same order returns the same levels and the same total error.

Speed
-----
The loop nest is the standard one: O(L |S| T) min-plus updates, vectorized over ``r``. Three things
make it cheaper without changing any answer:

- **Windows.** Row ``l`` is computed only for ``r`` in
  ``[max(minsuffix_l, T - maxprefix_l), T - minprefix_l]``. Back-tracking from ``F_0(T)`` reads
  nothing else, and every ``F_l(r)`` with ``r < minsuffix_l`` is infinite. Each row is at most
  ``T - (fastest total) + 1`` wide. Row 0 is one entry.
- **Pareto pruning.** A level that another level matches or beats in both time and error can
  never lower ``F_l``. ``F_{l+1}`` is non-increasing and float addition is monotone, so the
  forward pass skips it without changing a single value of ``F``. It sweeps levels in order of
  time, precomputed once. Back-tracking still scans *every* level in index order. A dominated
  level whose float sum ties the optimum (a smaller error can round to the same sum) is
  therefore still returned when the tie rule prefers it.
- **A numba kernel.** The compiler vectorizes its inner loop (AVX-512 compare and masked
  store), and blocks of 1024 ``r`` keep the working set in L1. Back-tracking needs no
  back-pointer table: every ``F`` row is kept, and the argmin is recomputed at the one ``r`` per
  layer that back-tracking visits.

On the bench instance (``bench/dp.py``: L = 52, |S| = 42, budget 5,000) a solve takes about
a tenth of a plain numpy DP's time without back-pointers (figures: docs/benchmarks.md).

:class:`DPSolver` does the time-only part (validation, windows, table) once. The SPDY search
calls it hundreds of times with the same times and budget and new errors.

Discretization
--------------
:func:`discretize` follows the authors' code, with the skipped-layer accounting fixed (their
released timing files count the skipped first/last layers in neither the fixed part nor the
DP's layers, which makes predicted speedups optimistic). The prunable layers' budget is
``dense_total / target - (dense_total - prunable_dense)``, where ``prunable_dense`` is the dense
time of the layers the DP chooses levels for. Layers that are not pruned belong to the fixed
remainder. That budget is split into ``buckets`` buckets, and every time is rounded to whole
buckets. With ``rounding="nearest"`` (the authors' choice) a profile the DP accepts can exceed
the real budget, by at most :attr:`Discretized.max_overrun_ms`. Check the chosen profile with
:meth:`Discretized.fits`. ``rounding="up"`` makes every accepted profile fit for certain, at the
cost of up to one bucket per layer of slack.
"""

from __future__ import annotations

import math
import operator
import threading
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numba
import numpy as np
from numpy.typing import ArrayLike

from pruneflow.errors import PruneflowError

__all__ = [
    "ChainDPSolver",
    "DPResult",
    "DPSolver",
    "Discretized",
    "discretize",
    "max_reachable_speedup",
    "predicted_speedup",
    "solve",
]

# The F table holds (L + 1) windows of float64; refuse beyond this instead of swapping the
# machine to death (2 GiB; SPDY's ResNet50 setting needs under 5 MiB).
_MAX_TABLE_ENTRIES = 1 << 28

# Entries of r per block in the kernel: 8 KiB of destination, so the block and the source ranges
# of all levels stay in L1. 1024 to 2048 measured ~20% faster than whole rows (AMD EPYC).
_BLOCK = 1024


class DPResult(NamedTuple):
    """The optimal profile: ``levels[l]`` is layer ``l``'s level index.

    ``total_error`` is ``e[0, s_0] + (e[1, s_1] + (...))``, summed from the last layer backwards.
    """

    levels: np.ndarray
    total_error: float


# --------------------------------------------------------------------------------------------
# Validation helpers: every message names the argument and, where useful, the first bad entry.


def _matrix(name: str, value: ArrayLike) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nested lists and the like
        raise PruneflowError(f"{name} must be a 2-D numeric array [layers, levels]: {exc}") from exc
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise PruneflowError(
            f"{name} must be a 2-D numeric array [layers, levels], got dtype {arr.dtype}"
        )
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise PruneflowError(
            f"{name} must be a 2-D array [layers, levels] with at least one layer and one "
            f"level, got shape {arr.shape}"
        )
    return arr


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    layer, level = np.argwhere(mask)[0]
    return int(layer), int(level)


def _check_finite(name: str, arr: np.ndarray) -> None:
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            layer, level = _first_bad(bad)
            raise PruneflowError(
                f"{name} must be finite, but {name}[{layer}, {level}] (layer {layer}, level "
                f"{level}) is {arr[layer, level]}"
            )


def _check_nonnegative(name: str, arr: np.ndarray) -> None:
    bad = arr < 0
    if bad.any():
        layer, level = _first_bad(bad)
        raise PruneflowError(
            f"{name} must be non-negative, but {name}[{layer}, {level}] (layer {layer}, level "
            f"{level}) is {arr[layer, level]}"
        )


def _as_bucket_times(times: ArrayLike, budget: int) -> np.ndarray:
    """Validated int64 copy of ``times``; entries above ``budget`` clipped to ``budget + 1``.

    Clipping keeps huge values (uint64, 1e30 as float) from overflowing int64 arithmetic. Any
    value above the budget is as infeasible as any other.
    """
    arr = _matrix("times", times)
    _check_finite("times", arr)
    _check_nonnegative("times", arr)
    if np.issubdtype(arr.dtype, np.floating):
        bad = arr != np.floor(arr)
        if bad.any():
            layer, level = _first_bad(bad)
            raise PruneflowError(
                f"times must be whole time buckets, but times[{layer}, {level}] is "
                f"{arr[layer, level]}; convert milliseconds with pruneflow.spdy.dp.discretize()"
            )
        clipped = np.minimum(arr, float(budget + 1))
    elif arr.dtype.kind == "u":  # uint64 does not fit int64; clip in its own type first
        clipped = np.minimum(arr, np.uint64(budget + 1))
    else:
        clipped = np.minimum(arr.astype(np.int64), budget + 1)
    return clipped.astype(np.int64)


def _as_budget(budget: int, name: str = "budget") -> int:
    try:
        value = operator.index(budget)
    except TypeError:
        raise PruneflowError(
            f"{name} must be an integer number of time buckets, got {budget!r} "
            f"({type(budget).__name__})"
        ) from None
    if not 0 <= value < 2**62:  # the upper bound keeps all index arithmetic inside int64
        raise PruneflowError(
            f"{name} must be a non-negative number of time buckets below 2**62, got {value}"
        )
    return value


# --------------------------------------------------------------------------------------------
# The kernel. Both functions are compiled on first use and cached on disk (cache=True).


@numba.njit(cache=True, nogil=True)
def _relax(dst: np.ndarray, src: np.ndarray, err: float) -> None:
    # Views indexed by the loop counter: indexing table[offset + k] directly kept LLVM from
    # vectorizing (numba's negative-index wraparound check on a signed sum). dst and src lie in
    # different rows, so LLVM's runtime overlap check passes and the AVX-512 loop runs.
    for k in range(dst.shape[0]):
        cand = err + src[k]
        cur = dst[k]
        dst[k] = cand if cand < cur else cur


@numba.njit(cache=True, nogil=True)
def _dp_kernel(errors, times, order, lo, hi, off, table, kept_t, kept_e, kept_r0, levels):
    n_layers, n_levels = errors.shape
    last = off[n_layers]
    table[last : last + hi[n_layers] - lo[n_layers] + 1] = 0.0
    for layer in range(n_layers - 1, -1, -1):
        a = lo[layer]
        b = hi[layer]
        row = off[layer]
        next_lo = lo[layer + 1]
        next_row = off[layer + 1]
        table[row : row + b - a + 1] = np.inf
        # Pareto sweep in order of time: a group of equal-time levels contributes only its least
        # error, and only if that beats every faster level's error.
        n_kept = 0
        best_faster = np.inf
        k = 0
        while k < n_levels:
            t = times[layer, order[layer, k]]
            # Next-row entries below next_lo are +inf or out of reach from F_0(T); skip them.
            r0 = max(a, t + next_lo)
            if r0 > b:
                break  # this and every slower level cannot fit anywhere in the window
            e = errors[layer, order[layer, k]]
            k += 1
            while k < n_levels and times[layer, order[layer, k]] == t:
                e = min(e, errors[layer, order[layer, k]])
                k += 1
            if e < best_faster:
                best_faster = e
                kept_t[n_kept] = t
                kept_e[n_kept] = e
                kept_r0[n_kept] = r0
                n_kept += 1
        # Blocks of r keep the destination and the source ranges of all levels in L1 cache.
        for start in range(a, b + 1, _BLOCK):
            end = min(start + _BLOCK, b + 1)
            for j in range(n_kept):
                r0 = max(start, kept_r0[j])
                if r0 < end:
                    dst = row + r0 - a
                    src = next_row + r0 - kept_t[j] - next_lo
                    n = end - r0
                    _relax(table[dst : dst + n], table[src : src + n], kept_e[j])

    r = hi[0]
    total = table[off[0] + r - lo[0]]
    if not np.isfinite(total):
        return total
    for layer in range(n_layers):
        target = table[off[layer] + r - lo[layer]]
        next_lo = lo[layer + 1]
        next_row = off[layer + 1]
        found = False
        for s in range(n_levels):
            x = r - times[layer, s]
            if x < next_lo:
                continue
            # Same operands as in the forward pass, so equality is bit-exact.
            if errors[layer, s] + table[next_row + x - next_lo] == target:
                levels[layer] = s
                r = x
                found = True
                break
        if not found:
            return np.nan
    return total


# --------------------------------------------------------------------------------------------


class DPSolver:
    """Exact solver for fixed ``times`` and ``budget``; call :meth:`solve` with any errors.

    All time-dependent work (validation, row windows, the table) happens here once. A solver
    instance is safe to share between threads: calls to :meth:`solve` are serialized.

    Raises :class:`PruneflowError` for invalid input, or if even the fastest profile (every
    layer at its fastest level) exceeds the budget.
    """

    def __init__(self, times: ArrayLike, budget: int) -> None:
        budget = _as_budget(budget)
        t = _as_bucket_times(times, budget)
        n_layers = t.shape[0]
        fastest = t.min(axis=1)
        fastest_total = int(fastest.sum())
        if fastest_total > budget:
            raise PruneflowError(
                f"infeasible: even the fastest profile (every layer at its fastest level) takes "
                f"{fastest_total} time buckets, more than the budget of {budget}; lower the "
                f"target speedup"
            )
        # Levels above the budget can never be chosen; leaving them out of the max prefix
        # keeps the windows tight.
        slowest = np.where(t <= budget, t, -1).max(axis=1)
        zero = np.zeros(1, dtype=np.int64)
        min_prefix = np.concatenate([zero, np.cumsum(fastest)])
        max_prefix = np.concatenate([zero, np.cumsum(slowest)])
        min_suffix = np.concatenate([np.cumsum(fastest[::-1])[::-1], zero])
        lo = np.maximum(np.maximum(min_suffix, budget - max_prefix), 0)
        hi = budget - min_prefix
        width = hi - lo + 1
        entries = int(width.sum())
        if entries > _MAX_TABLE_ENTRIES:
            raise PruneflowError(
                f"budget of {budget} time buckets over {n_layers} layers needs a DP table of "
                f"{entries * 8 / 2**30:.1f} GiB; use fewer buckets (discretize(buckets=...))"
            )
        self._times = t
        self._budget = budget
        self._fastest_total = fastest_total
        self._lo = lo.astype(np.int64)
        self._hi = hi.astype(np.int64)
        self._off = np.concatenate([zero, np.cumsum(width)[:-1]]).astype(np.int64)
        self._table = np.empty(entries, dtype=np.float64)
        self._order = np.argsort(t, axis=1, kind="stable").astype(np.int64)
        n_levels = t.shape[1]
        self._kept_t = np.empty(n_levels, dtype=np.int64)
        self._kept_e = np.empty(n_levels, dtype=np.float64)
        self._kept_r0 = np.empty(n_levels, dtype=np.int64)
        self._lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, int]:
        """``(layers, levels)``, the shape :meth:`solve` expects for ``errors``."""
        layers, levels = self._times.shape
        return layers, levels

    @property
    def budget(self) -> int:
        """The time budget in buckets."""
        return self._budget

    @property
    def fastest_total(self) -> int:
        """Time of the fastest profile, in buckets (at most :attr:`budget`)."""
        return self._fastest_total

    def solve(self, errors: ArrayLike) -> DPResult:
        """The optimal profile for ``errors`` [layers, levels] (float, finite).

        Returns ``(levels, total_error)``; ties go to the lexicographically smallest ``levels``
        (see the module docstring).
        """
        arr = _matrix("errors", errors)
        if arr.shape != self._times.shape:
            raise PruneflowError(
                f"errors has shape {arr.shape} but times has shape {self._times.shape}; both "
                f"must be [layers, levels]"
            )
        _check_finite("errors", arr)
        e = np.ascontiguousarray(arr, dtype=np.float64)
        # Bound every partial sum so that +-inf can only mean "infeasible", never overflow.
        with np.errstate(over="ignore"):
            if not math.isfinite(float(np.abs(e).max(axis=1).sum())):
                raise PruneflowError(
                    "errors are too large: a sum over layers would overflow float64; rescale them"
                )
        levels = np.empty(self._times.shape[0], dtype=np.int64)
        with self._lock:
            total = _dp_kernel(
                e,
                self._times,
                self._order,
                self._lo,
                self._hi,
                self._off,
                self._table,
                self._kept_t,
                self._kept_e,
                self._kept_r0,
                levels,
            )
        if not math.isfinite(total):  # cannot happen after the checks above
            raise RuntimeError(f"DP internal error: optimum {total} for a feasible budget")
        return DPResult(levels, float(total))


class ChainDPSolver:
    """Exact solver when a layer's time depends on its own and the previous layer's level.

    ``times`` int [layers, levels, levels]: ``times[l, p, s]`` is layer ``l``'s time at level
    ``s`` when layer ``l - 1`` is at level ``p`` (layer 0 reads row ``p = 0``). A channel's
    width is a conv's output and its successor's input, so in a chain of convs this is the
    exact cost model (pruneflow.structured). The recurrence carries the previous level in the
    state::

        F_L(r, p) = 0
        F_l(r, p) = min over s with t[l, p, s] <= r of  e[l, s] + F_{l+1}(r - t[l, p, s], s)
        optimum = F_0(T, 0)

    O(L |S|^2 T), vectorized over ``r``. Same interface, float64 summation order (from the
    last layer backwards) and tie rule (lexicographically smallest levels) as
    :class:`DPSolver`, which is the special case ``times[l, p, s] = t[l, s]``.
    """

    def __init__(self, times: ArrayLike, budget: int) -> None:
        budget = _as_budget(budget)
        try:
            arr = np.asarray(times)
        except (TypeError, ValueError) as exc:
            raise PruneflowError(f"times must be [layers, levels, levels]: {exc}") from exc
        if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or min(arr.shape) < 1:
            raise PruneflowError(
                f"chain times must be an array [layers, levels, levels], got shape {arr.shape}"
            )
        n_layers, n_levels, _ = arr.shape
        flat = _as_bucket_times(arr.reshape(n_layers, -1), budget)
        t = flat.reshape(arr.shape)
        if (n_layers + 1) * n_levels * (budget + 1) > _MAX_TABLE_ENTRIES:
            raise PruneflowError(
                f"a chain DP over {n_layers} layers, {n_levels} levels and {budget} buckets is "
                "too large; use fewer buckets (discretize(buckets=...))"
            )
        # the fastest chain, by the same recurrence over time alone
        best = np.zeros(n_levels, dtype=np.int64)
        for layer in range(n_layers - 1, 0, -1):
            best = (t[layer] + best[None, :]).min(axis=1)
        fastest_total = int((t[0, 0] + best).min())
        if fastest_total > budget:
            raise PruneflowError(
                f"infeasible: even the fastest profile takes {fastest_total} time buckets, more "
                f"than the budget of {budget}; lower the target speedup"
            )
        self._times = t
        self._budget = budget
        self._fastest_total = fastest_total
        self._lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, int]:
        """``(layers, levels)``, the shape :meth:`solve` expects for ``errors``."""
        return int(self._times.shape[0]), int(self._times.shape[2])

    @property
    def budget(self) -> int:
        return self._budget

    @property
    def fastest_total(self) -> int:
        return self._fastest_total

    def solve(self, errors: ArrayLike) -> DPResult:
        """The optimal profile for ``errors`` [layers, levels]; see the class docstring."""
        arr = _matrix("errors", errors)
        if arr.shape != self.shape:
            raise PruneflowError(
                f"errors has shape {arr.shape} but the chain times need {self.shape}"
            )
        _check_finite("errors", arr)
        e = np.ascontiguousarray(arr, dtype=np.float64)
        t = self._times
        n_layers, n_levels = self.shape
        size = self._budget + 1
        with self._lock:
            # tables[l][p, r] = F_l(r, p); F_L = 0
            nxt = np.zeros((n_levels, size))
            tables = [nxt]
            for layer in range(n_layers - 1, -1, -1):
                cur = np.full((n_levels, size), np.inf)
                rows = 1 if layer == 0 else n_levels
                for p in range(rows):
                    for s in range(n_levels):
                        dt = int(t[layer, p, s])
                        if dt >= size:
                            continue
                        cand = e[layer, s] + nxt[s, : size - dt]
                        np.minimum(cur[p, dt:], cand, out=cur[p, dt:])
                tables.append(cur)
                nxt = cur
            tables.reverse()  # tables[l] is F_l
            total = float(tables[0][0, self._budget])
            if not math.isfinite(total):
                raise RuntimeError(f"chain DP internal error: optimum {total}")
            levels = np.empty(n_layers, dtype=np.int64)
            r, p = self._budget, 0
            for layer in range(n_layers):
                target = tables[layer][p, r]
                for s in range(n_levels):
                    dt = int(t[layer, p, s])
                    if dt <= r and e[layer, s] + tables[layer + 1][s, r - dt] == target:
                        levels[layer] = s
                        r, p = r - dt, s
                        break
                else:
                    raise RuntimeError("chain DP internal error: back-tracking found no level")
        return DPResult(levels, total)


def solve(errors: ArrayLike, times: ArrayLike, budget: int) -> DPResult:
    """Choose one level per layer minimizing total error with total time <= ``budget``.

    ``errors``: float [layers, levels], finite. ``times``: non-negative integers (time buckets)
    of the same shape. ``budget``: non-negative int. Returns ``(levels, total_error)``,
    ``levels`` an int64 array [layers]. It is exact, and ties go to the lexicographically
    smallest ``levels`` (lowest level for layer 0 first; see the module docstring). Raises
    :class:`PruneflowError` for invalid input or if even the fastest profile exceeds
    ``budget``. For many solves with the same times and budget, build a :class:`DPSolver` once.
    """
    return DPSolver(times, budget).solve(errors)


# --------------------------------------------------------------------------------------------
# Discretization of measured times (milliseconds) into buckets.


def _positive_finite(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PruneflowError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise PruneflowError(f"{name} must be finite and > 0, got {value!r}")
    return v


def _times_ms(times_ms: ArrayLike) -> np.ndarray:
    arr = _matrix("times_ms", times_ms)
    _check_finite("times_ms", arr)
    _check_nonnegative("times_ms", arr)
    return arr.astype(np.float64)


def _totals(dense_total_ms: float, prunable_dense_ms: float) -> tuple[float, float]:
    total = _positive_finite("dense_total_ms", dense_total_ms)
    try:
        prunable = float(prunable_dense_ms)
    except (TypeError, ValueError):
        raise PruneflowError(
            f"prunable_dense_ms must be a number, got {prunable_dense_ms!r}"
        ) from None
    if math.isfinite(prunable) and total < prunable <= total * (1 + 1e-9):
        # float rounding of a table whose layers account for all of the dense time (every
        # layer profiled, no remainder): the same time summed in another order
        prunable = total
    if not (math.isfinite(prunable) and 0 <= prunable <= total):
        raise PruneflowError(
            f"prunable_dense_ms must lie in [0, dense_total_ms = {total}], got "
            f"{prunable_dense_ms!r}; it is the dense time of the layers the DP chooses levels "
            f"for (skipped layers belong to the fixed remainder)"
        )
    return total, prunable


def _levels(levels: ArrayLike, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(levels)
    if arr.shape != (shape[0],) or not np.issubdtype(arr.dtype, np.integer):
        raise PruneflowError(
            f"levels must be an integer array of shape ({shape[0]},), one level per layer; got "
            f"dtype {arr.dtype}, shape {arr.shape}"
        )
    bad = (arr < 0) | (arr >= shape[1])
    if bad.any():
        layer = int(np.argmax(bad))
        raise PruneflowError(
            f"levels[{layer}] = {arr[layer]} is not a level index in [0, {shape[1] - 1}]"
        )
    return arr.astype(np.int64)


def _speedup(total: float, fixed: float, prunable_time: float) -> float:
    denom = fixed + prunable_time
    return math.inf if denom <= 0 else total / denom


def max_reachable_speedup(
    times_ms: ArrayLike, dense_total_ms: float, prunable_dense_ms: float
) -> float:
    """Speedup of the fastest profile: ``total / (total - prunable + sum_l min_s t[l, s])``.

    ``times_ms`` [layers, levels] covers exactly the layers the DP chooses levels for, and
    ``prunable_dense_ms`` is their dense time. Returns ``inf`` if that profile takes no time
    at all.
    """
    t = _times_ms(times_ms)
    total, prunable = _totals(dense_total_ms, prunable_dense_ms)
    return _speedup(total, total - prunable, float(t.min(axis=1).sum()))


def predicted_speedup(
    times_ms: ArrayLike, levels: ArrayLike, dense_total_ms: float, prunable_dense_ms: float
) -> float:
    """Predicted end-to-end speedup of a profile: ``total / (total - prunable + sum_l t)``.

    This uses the real (unrounded) per-layer times, not buckets. It assumes, like SPDY, that the
    model's time is the fixed remainder plus the layers' times.
    """
    t = _times_ms(times_ms)
    total, prunable = _totals(dense_total_ms, prunable_dense_ms)
    lv = _levels(levels, t.shape)
    return _speedup(total, total - prunable, float(t[np.arange(t.shape[0]), lv].sum()))


@dataclass(frozen=True, eq=False)
class Discretized:
    """Times in buckets for :func:`solve`, with what the rounding costs.

    ``times`` int64 [layers, levels] and ``budget`` (= the number of buckets) go to the DP. An
    entry above the budget is clipped to ``budget + 1``, since it can never be chosen. The
    rounding figures cover only entries within the budget:
    ``max_abs_rounding_ms`` and ``mean_abs_rounding_ms`` compare ``|t_ms - t * bucket_ms|``
    (at most half a bucket with "nearest", below one bucket with "up").
    ``max_overrun_ms`` is the most by which a profile the DP accepts can exceed ``budget_ms``
    in real time. It is ``sum_l max_s (t_ms - t * bucket_ms)^+``, and 0 with ``rounding="up"``.
    """

    times: np.ndarray
    budget: int
    bucket_ms: float
    budget_ms: float
    fixed_ms: float
    dense_total_ms: float
    target_speedup: float
    rounding: str
    max_abs_rounding_ms: float
    mean_abs_rounding_ms: float
    max_overrun_ms: float
    times_ms: np.ndarray

    def real_time_ms(self, levels: ArrayLike) -> float:
        """Real (unrounded) time of the prunable layers for a profile."""
        lv = _levels(levels, self.times_ms.shape)
        return float(self.times_ms[np.arange(lv.shape[0]), lv].sum())

    def fits(self, levels: ArrayLike) -> bool:
        """Whether the profile's real time is within ``budget_ms`` (1e-12 relative slack).

        The slack absorbs float noise when the budget is met exactly.
        """
        return self.real_time_ms(levels) <= self.budget_ms * (1 + 1e-12)

    def predicted_speedup(self, levels: ArrayLike) -> float:
        """End-to-end speedup of the profile from real times (see :func:`predicted_speedup`)."""
        return _speedup(self.dense_total_ms, self.fixed_ms, self.real_time_ms(levels))


def discretize(
    times_ms: ArrayLike,
    dense_total_ms: float,
    prunable_dense_ms: float,
    target_speedup: float,
    buckets: int = 10_000,
    rounding: Literal["nearest", "up"] = "nearest",
) -> Discretized:
    """Turn per-layer times (ms) into integer buckets of the prunable layers' budget.

    ``times_ms`` [layers, levels] covers exactly the layers the DP chooses levels for, and
    ``prunable_dense_ms`` is their dense time. Every other layer (e.g. the unpruned first and
    last) belongs to the fixed remainder ``dense_total_ms - prunable_dense_ms``. The budget is
    ``dense_total_ms / target_speedup - remainder``, split into ``buckets`` buckets.
    ``rounding="nearest"`` (ties to even, as in the authors' code) or ``"up"`` (guarantees that
    every profile the DP accepts really fits). Raises :class:`PruneflowError` naming the largest
    reachable speedup if the target cannot be met.
    """
    t = _times_ms(times_ms)
    total, prunable = _totals(dense_total_ms, prunable_dense_ms)
    target = _positive_finite("target_speedup", target_speedup)
    n_buckets = _as_budget(buckets, "buckets")
    if n_buckets < 1:
        raise PruneflowError(f"buckets must be >= 1, got {buckets!r}")
    if rounding not in ("nearest", "up"):
        raise PruneflowError(f"rounding must be 'nearest' or 'up', got {rounding!r}")

    fixed = total - prunable
    budget_ms = total / target - fixed
    fastest_ms = float(t.min(axis=1).sum())
    reach = _speedup(total, fixed, fastest_ms)
    if budget_ms < fastest_ms or budget_ms <= 0:
        raise PruneflowError(
            f"target speedup {target:g}x is unreachable: the fastest profile (every layer at its "
            f"fastest level) gives at most {reach:.4g}x ({fastest_ms:.6g} ms of prunable time "
            f"plus {fixed:.6g} ms fixed, dense {total:.6g} ms)"
        )

    bucket_ms = budget_ms / n_buckets
    scaled = t / bucket_ms
    rounded = np.rint(scaled) if rounding == "nearest" else np.ceil(scaled)
    ints = np.minimum(rounded, n_buckets + 1).astype(np.int64)
    if int(ints.min(axis=1).sum()) > n_buckets:
        raise PruneflowError(
            f"target speedup {target:g}x is within rounding of the largest reachable speedup "
            f"{reach:.6g}x: the fastest profile fits in real time but not once rounded to "
            f"{n_buckets} buckets of {bucket_ms:.4g} ms; lower the target or use more buckets"
        )

    fits = ints <= n_buckets
    diff = np.where(fits, t - ints * bucket_ms, 0.0)  # > 0: the DP sees less time than is real
    abs_diff = np.abs(diff[fits])
    overrun = float(np.maximum(diff.max(axis=1), 0.0).sum())
    ints.flags.writeable = False
    t.flags.writeable = False
    return Discretized(
        times=ints,
        budget=n_buckets,
        bucket_ms=bucket_ms,
        budget_ms=budget_ms,
        fixed_ms=fixed,
        dense_total_ms=total,
        target_speedup=target,
        rounding=rounding,
        max_abs_rounding_ms=float(abs_diff.max()),
        mean_abs_rounding_ms=float(abs_diff.mean()),
        max_overrun_ms=overrun if rounding == "nearest" else 0.0,
        times_ms=t,
    )
