"""One-shot baselines at SPDY's discretized budget: uniform, global magnitude, prior-only DP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pruneflow.errors import PruneflowError
from pruneflow.spdy.baselines import (
    global_magnitude_profile,
    global_magnitude_search,
    magnitude_levels,
    prior_profile,
    uniform_profile,
)
from pruneflow.spdy.dp import DPSolver, solve
from pruneflow.spdy.search import errors_from_c

GRID = [0.0, 0.4, 0.55, 0.7, 0.8, 0.9, 0.95, 0.99]


def time_of(times: np.ndarray, levels: np.ndarray) -> int:
    return int(times[np.arange(len(levels)), levels].sum())


# --------------------------------------------------------------------------------------------
# Uniform


def test_uniform_matches_brute_force_loop() -> None:
    rng = np.random.default_rng(0)
    none_fit = 0
    for _ in range(300):
        n_layers, n_levels = int(rng.integers(1, 7)), int(rng.integers(1, 9))
        times = rng.integers(0, 20, (n_layers, n_levels))  # not monotone in the level
        budget = int(rng.integers(0, 20 * n_layers))
        expected = None
        for s in range(n_levels):
            if sum(times[layer, s] for layer in range(n_layers)) <= budget:
                expected = s
                break
        if expected is None:
            none_fit += 1
            with pytest.raises(PruneflowError, match="no uniform profile fits"):
                uniform_profile(times, budget)
            continue
        levels = uniform_profile(times, budget)
        assert levels.dtype == np.int64
        np.testing.assert_array_equal(levels, np.full(n_layers, expected))
    assert 10 < none_fit < 200


def test_uniform_takes_the_least_sparse_fitting_level_even_if_a_denser_one_is_slower() -> None:
    times = np.array([[10, 12, 6, 3], [10, 11, 7, 3]])  # level 1 slower than dense
    assert uniform_profile(times, 20).tolist() == [0, 0]
    assert uniform_profile(times, 19).tolist() == [2, 2]
    assert uniform_profile(times, 6).tolist() == [3, 3]
    with pytest.raises(PruneflowError, match=r"fastest uniform level \(3\) takes 6"):
        uniform_profile(times, 5)


# --------------------------------------------------------------------------------------------
# Prior


def test_prior_is_the_dp_with_c_equal_one() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        n_layers, n_levels = int(rng.integers(1, 8)), int(rng.integers(2, 9))
        times = rng.integers(0, 10, (n_layers, n_levels))
        budget = int(times.min(axis=1).sum() + rng.integers(0, 10 * n_layers))
        solver = DPSolver(times, budget)
        ones = np.ones((n_layers, n_levels)) * (np.arange(n_levels) / (n_levels - 1)) ** 2
        expected = solve(ones, times, budget).levels
        got = prior_profile(solver)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(
            got, solver.solve(errors_from_c(np.ones(n_layers), n_levels)).levels
        )
        assert time_of(times, got) <= budget


# --------------------------------------------------------------------------------------------
# Global magnitude


def brute_levels(weights, grid, tau):
    """Direct definition: prune |w| <= tau; snap up to the first level with grid >= sparsity."""
    levels, sparsities = [], []
    for w in weights:
        a = np.abs(np.asarray(w, dtype=np.float64)).ravel()
        sp = np.count_nonzero(a <= tau) / a.size
        level = len(grid) - 1
        for i, g in enumerate(grid):
            if g >= sp:
                level = i
                break
        levels.append(level)
        sparsities.append(sp)
    return np.array(levels), np.array(sparsities)


def candidate_thresholds(weights):
    """Every threshold at which some layer's pruned count changes, plus 'prune nothing'."""
    absw = np.concatenate([np.abs(np.asarray(w, dtype=np.float64)).ravel() for w in weights])
    return [-math.inf, *np.unique(absw).tolist()]


def brute_force_magnitude(weights, grid, times, budget):
    for tau in candidate_thresholds(weights):
        levels, sp = brute_levels(weights, grid, tau)
        if time_of(times, levels) <= budget:
            return tau, levels, sp
    return None


def random_magnitude_instance(rng: np.random.Generator, monotone: bool):
    n_layers = int(rng.integers(1, 5))
    n_levels = int(rng.integers(2, len(GRID) + 1))
    grid = sorted(rng.choice(GRID[1:], n_levels - 1, replace=False).tolist())
    grid = [0.0, *grid] if rng.random() < 0.8 else sorted(rng.choice(GRID, n_levels, False))
    sizes = rng.integers(1, 40, n_layers)
    if rng.random() < 0.5:  # small integers: many ties across and within layers, and zeros
        weights = [rng.integers(-4, 5, int(n)).astype(np.float32) for n in sizes]
    else:
        weights = [rng.normal(size=int(n)) * rng.uniform(0.1, 3) for n in sizes]
    if monotone:
        steps = rng.integers(0, 6, (n_layers, n_levels))
        steps[:, 0] = rng.integers(10, 30, n_layers)
        times = np.maximum(np.cumsum(np.concatenate([steps[:, :1], -steps[:, 1:]], 1), 1), 0)
    else:
        times = rng.integers(0, 30, (n_layers, n_levels))
    lo, hi = int(times.min(axis=1).sum()), int(times[:, 0].sum())
    budget = int(rng.integers(max(0, lo - 5), hi + 3))
    return weights, grid, times, budget


@pytest.mark.parametrize("monotone", [True, False], ids=["monotone-times", "noisy-times"])
def test_global_magnitude_equals_brute_force_scan(monotone: bool) -> None:
    rng = np.random.default_rng(2 + monotone)
    found = infeasible = 0
    for _ in range(300):
        weights, grid, times, budget = random_magnitude_instance(rng, monotone)
        expected = brute_force_magnitude(weights, grid, times, budget)
        if expected is None:
            infeasible += 1
            with pytest.raises(PruneflowError, match="no global magnitude threshold fits"):
                global_magnitude_search(weights, grid, times, budget)
            continue
        found += 1
        got = global_magnitude_search(weights, grid, times, budget)
        assert got.threshold == expected[0]
        np.testing.assert_array_equal(got.levels, expected[1])
        np.testing.assert_array_equal(got.sparsities, expected[2])
        assert got.time == time_of(times, got.levels) <= budget
        np.testing.assert_array_equal(
            global_magnitude_profile(weights, grid, times, budget), got.levels
        )
    assert found > 150 and infeasible > 5


def test_global_magnitude_threshold_is_minimal() -> None:
    rng = np.random.default_rng(4)
    checked = 0
    for _ in range(200):
        weights, grid, times, budget = random_magnitude_instance(rng, monotone=False)
        try:
            got = global_magnitude_search(weights, grid, times, budget)
        except PruneflowError:
            continue
        levels, _ = magnitude_levels(weights, grid, got.threshold)
        np.testing.assert_array_equal(levels, got.levels)
        assert time_of(times, levels) <= budget
        if got.threshold == -math.inf:
            continue
        # A slightly lower threshold, and every lower candidate, misses the budget.
        below = np.nextafter(got.threshold, -math.inf)
        # a subnormal `below` would read as 0 once a test earlier in the process has set
        # torch.set_flush_denormal(True) (the pipeline does): the loop below covers it anyway
        if abs(below) >= np.finfo(np.float64).tiny:
            assert time_of(times, magnitude_levels(weights, grid, below)[0]) > budget
        for tau in candidate_thresholds(weights):
            if tau >= got.threshold:
                break
            assert time_of(times, brute_levels(weights, grid, tau)[0]) > budget
        checked += 1
    assert checked > 80


def test_time_is_monotone_in_threshold_only_for_monotone_times() -> None:
    """With level times non-increasing per layer, time falls as the threshold rises (so a
    binary search would be exact); with noisy times it need not, and the sweep still finds the
    lowest threshold where a binary search would not."""
    rng = np.random.default_rng(5)
    for _ in range(100):
        weights, grid, times, _ = random_magnitude_instance(rng, monotone=True)
        path = [
            time_of(times, brute_levels(weights, grid, tau)[0])
            for tau in candidate_thresholds(weights)
        ]
        assert all(a >= b for a, b in zip(path, path[1:], strict=False))

    weights = [np.arange(10.0)]  # |w| = 0..9, one per count
    grid = [0.0, 0.2, 0.5, 0.9]
    times = np.array([[12, 9, 14, 3]])  # level 2 slower than dense (a real-timing pattern)
    got = global_magnitude_search(weights, grid, times, 10)
    assert got.threshold == 0.0 and got.levels.tolist() == [1] and got.time == 9
    cands = candidate_thresholds(weights)
    lo, hi = 0, len(cands) - 1  # a binary search for the first fitting candidate
    while lo < hi:
        mid = (lo + hi) // 2
        if time_of(times, brute_levels(weights, grid, cands[mid])[0]) <= 10:
            hi = mid
        else:
            lo = mid + 1
    assert cands[lo] == 5.0  # it lands past the lowest fitting threshold


def test_snapping_rule() -> None:
    w = np.arange(1.0, 11.0)  # 10 weights, |w| = 1..10
    grid = [0.0, 0.3, 0.6, 0.8]
    # exactly a grid sparsity stays at that level; just above it goes one level up
    assert magnitude_levels([w], grid, 3.0)[0].tolist() == [1]  # 0.3
    assert magnitude_levels([w], grid, 4.0)[0].tolist() == [2]  # 0.4 -> 0.6
    assert magnitude_levels([w], grid, 8.0)[0].tolist() == [3]  # 0.8
    assert magnitude_levels([w], grid, 9.0)[0].tolist() == [3]  # 0.9 > last level: clamp
    assert magnitude_levels([w], grid, 0.5)[0].tolist() == [0]
    # float64 count / n equals the grid's float (0.29 == 29 / 100): no spurious level up
    w100 = np.arange(1.0, 101.0)
    levels, sp = magnitude_levels([w100], [0.0, 0.29, 0.5], 29.0)
    assert sp.tolist() == [0.29] and levels.tolist() == [1]
    times = np.array([[10, 6, 1]])
    got = global_magnitude_search([w100], [0.0, 0.29, 0.5], times, 6)
    assert got.threshold == 1.0 and got.levels.tolist() == [1]


def test_global_magnitude_accepts_torch_tensors() -> None:
    gen = torch.Generator().manual_seed(0)
    tensors = [torch.randn(8, 3, 3, 3, generator=gen), torch.randn(16, 8, generator=gen)]
    times = np.array([[20, 15, 12, 10, 8, 7, 6, 5], [30, 20, 15, 12, 10, 8, 7, 6]])
    budget = 30
    expected = global_magnitude_search([t.numpy() for t in tensors], GRID, times, budget)
    got = global_magnitude_search(tensors, GRID, times, budget)
    assert got.threshold == expected.threshold
    np.testing.assert_array_equal(got.levels, expected.levels)
    half = global_magnitude_search([t.to(torch.bfloat16) for t in tensors], GRID, times, budget)
    assert half.time <= budget


def test_global_magnitude_dense_fits_gives_no_pruning() -> None:
    got = global_magnitude_search([np.ones(4)], [0.0, 0.5], np.array([[3, 2]]), 3)
    assert got.threshold == -math.inf and got.levels.tolist() == [0] and got.time == 3


def test_global_magnitude_is_fast_on_a_larger_model() -> None:
    rng = np.random.default_rng(6)
    weights = [rng.normal(size=200_000).astype(np.float32) for _ in range(20)]
    grid = [0.0] + [1 - 0.6 * 0.9**k for k in range(40)]
    times = np.rint(100 * (0.2 + 0.8 * (1 - np.array(grid))))[None, :].repeat(20, 0)
    budget = int(times[:, 0].sum() / 2)
    got = global_magnitude_search(weights, grid, times, budget)  # one partition per layer
    assert got.time <= budget and (got.levels > 0).all()


@pytest.mark.parametrize(
    ("weights", "grid", "times", "budget", "match"),
    [
        ([np.ones(3)], [0.0, 0.5], np.ones((2, 2), int), 5, "weights for 1 layers"),
        ([np.ones(3), np.ones(2)], [0.0, 0.5, 0.9], np.ones((2, 2), int), 5, "grid has 3"),
        ([np.ones(3), np.ones(2)], [0.5, 0.5], np.ones((2, 2), int), 5, "strictly increase"),
        ([np.ones(3), np.ones(2)], [0.0, 1.5], np.ones((2, 2), int), 5, r"\[0, 1\]"),
        ([np.ones(3), np.array([])], [0.0, 0.5], np.ones((2, 2), int), 5, r"weights\[1\]"),
        ([np.ones(3), np.array([np.nan])], [0.0, 0.5], np.ones((2, 2), int), 5, "NaN"),
        ([np.ones(3), np.ones(2)], [0.0, 0.5], np.full((2, 2), 3), 5, "no global magnitude"),
        (np.ones((2, 3)), [0.0, 0.5], np.ones((2, 2), int), 5, "must be a list"),
        ([np.ones(3), np.ones(2)], [0.0, 0.5], np.ones((2, 2)) * 0.5, 5, "whole time buckets"),
    ],
)
def test_global_magnitude_invalid_inputs(weights, grid, times, budget, match) -> None:
    with pytest.raises(PruneflowError, match=match):
        global_magnitude_search(weights, grid, times, budget)
