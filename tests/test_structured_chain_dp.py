"""ChainDPSolver: SPDY's DP with the previous layer's level in the state."""

import itertools

import numpy as np
import pytest

from pruneflow.errors import PruneflowError
from pruneflow.spdy.dp import ChainDPSolver, DPSolver
from pruneflow.spdy.search import sensitivity_search


def _brute(errors, times, budget):
    n_layers, n_levels = errors.shape
    best = None
    for levels in itertools.product(range(n_levels), repeat=n_layers):
        prev = (0,) + levels[:-1]
        time = sum(int(times[i, p, s]) for i, (p, s) in enumerate(zip(prev, levels, strict=True)))
        if time > budget:
            continue
        err = 0.0
        for i in range(n_layers - 1, -1, -1):
            err = errors[i, levels[i]] + err
        if best is None or err < best[1]:  # product order = lexicographic: first wins ties
            best = (levels, err)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_chain_dp_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    layers, levels = 4, 3
    times = rng.integers(0, 8, (layers, levels, levels))
    errors = rng.random((layers, levels)).round(1)  # rounded: ties happen
    fastest = min(
        sum(times[i, p, s] for i, (p, s) in enumerate(zip((0,) + lv[:-1], lv, strict=True)))
        for lv in itertools.product(range(levels), repeat=layers)
    )
    budget = int(fastest + rng.integers(0, 10))
    got = ChainDPSolver(times, budget).solve(errors)
    want = _brute(errors, times, budget)
    assert tuple(got.levels.tolist()) == want[0]
    assert got.total_error == want[1]


def test_chain_dp_equals_additive_dp_when_times_ignore_the_previous_level():
    rng = np.random.default_rng(1)
    t2 = rng.integers(0, 20, (5, 4))
    t3 = np.repeat(t2[:, None, :], 4, axis=1)
    errors = rng.random((5, 4))
    budget = int(t2.min(axis=1).sum() + 15)
    a = DPSolver(t2, budget).solve(errors)
    b = ChainDPSolver(t3, budget).solve(errors)
    assert a.levels.tolist() == b.levels.tolist() and a.total_error == b.total_error


def test_chain_dp_infeasible_and_bad_shape_are_one_line():
    times = np.full((2, 2, 2), 5)
    with pytest.raises(PruneflowError, match="even the fastest profile takes 10"):
        ChainDPSolver(times, 9)
    with pytest.raises(PruneflowError, match=r"\[layers, levels, levels\]"):
        ChainDPSolver(np.zeros((2, 3)), 5)


def test_search_runs_on_chain_times():
    rng = np.random.default_rng(0)
    times = rng.integers(1, 10, (4, 3, 3))
    budget = 20
    seen = []

    def loss(profile):
        seen.append(profile)
        return float(sum(profile))

    result = sensitivity_search(times, budget, loss, k=5, max_no_improvement=3, seed=0)
    solver = ChainDPSolver(times, budget)
    assert len(result.best_profile) == 4 and solver.shape == (4, 3)
    for row in result.history:
        assert row["pred_time"] <= budget
