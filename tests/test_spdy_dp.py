"""The exact SPDY DP against brute force, its tie rule, discretization and error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pruneflow.errors import PruneflowError
from pruneflow.spdy.dp import (
    DPSolver,
    discretize,
    max_reachable_speedup,
    predicted_speedup,
    solve,
)


def nested_sum(errors: np.ndarray, levels: np.ndarray) -> float:
    """``e_0 + (e_1 + (... + e_{L-1}))``: the summation order the solver documents."""
    acc = 0.0
    for layer in range(len(levels) - 1, -1, -1):
        acc = float(errors[layer, levels[layer]]) + acc
    return acc


def brute_force(errors: np.ndarray, times: np.ndarray, budget: int):
    """Every profile; least nested-sum error within budget; ties -> lexicographically smallest.

    Returns ``(levels, total)`` or ``None`` when no profile fits.
    """
    n_layers, n_levels = errors.shape
    # Row k of `combos` is the k-th profile in lexicographic order (layer 0 most significant).
    combos = np.indices((n_levels,) * n_layers).reshape(n_layers, -1).T
    rows = np.arange(n_layers)
    time = times[rows, combos].sum(axis=1)
    err = np.zeros(len(combos))
    for layer in range(n_layers - 1, -1, -1):  # same float order as nested_sum
        err = errors[layer, combos[:, layer]] + err
    ok = time <= budget
    if not ok.any():
        return None
    best = err[ok].min()
    first = int(np.flatnonzero(ok & (err == best))[0])  # lexicographically smallest optimum
    return combos[first], float(best)


def random_instance(rng: np.random.Generator, integer_errors: bool):
    n_layers = int(rng.integers(1, 7))
    n_levels = int(rng.integers(1, 6))
    if integer_errors:  # small integers: many exact ties, sums exact in float64
        errors = rng.integers(-1, 4, (n_layers, n_levels)).astype(np.float64)
    else:
        errors = rng.normal(size=(n_layers, n_levels)) * 10.0 ** rng.integers(-3, 4)
    times = rng.integers(0, 7, (n_layers, n_levels))
    times[rng.random(times.shape) < 0.15] = 0  # zero-time levels
    lo, hi = int(times.min(axis=1).sum()), int(times.max(axis=1).sum())
    budget = max(0, int(rng.integers(lo - 3, hi + 3)))
    return errors, times, budget


@pytest.mark.parametrize("integer_errors", [False, True], ids=["float", "integer-ties"])
def test_matches_brute_force(integer_errors: bool) -> None:
    rng = np.random.default_rng(1234 + integer_errors)
    infeasible = exact_fit = 0
    for _ in range(400):
        errors, times, budget = random_instance(rng, integer_errors)
        expected = brute_force(errors, times, budget)
        if expected is None:
            infeasible += 1
            with pytest.raises(PruneflowError, match="infeasible"):
                solve(errors, times, budget)
            continue
        levels, total = solve(errors, times, budget)
        assert levels.dtype == np.int64 and levels.shape == (errors.shape[0],)
        np.testing.assert_array_equal(levels, expected[0])
        assert total == expected[1] == nested_sum(errors, levels)
        used = int(times[np.arange(len(levels)), levels].sum())
        assert used <= budget
        exact_fit += used == budget
    assert infeasible >= 20 and exact_fit >= 50  # the generator really covers these cases


def test_solver_reuse_with_many_error_matrices() -> None:
    rng = np.random.default_rng(7)
    times = rng.integers(0, 6, (5, 4))
    budget = int(times.min(axis=1).sum()) + 6
    solver = DPSolver(times, budget)
    assert solver.shape == (5, 4) and solver.budget == budget
    assert solver.fastest_total == times.min(axis=1).sum()
    for _ in range(50):
        errors = rng.integers(0, 3, (5, 4)).astype(float)
        levels, total = solver.solve(errors)
        exp_levels, exp_total = brute_force(errors, times, budget)
        np.testing.assert_array_equal(levels, exp_levels)
        assert total == exp_total


def reference_table(errors: np.ndarray, times: np.ndarray, budget: int) -> np.ndarray:
    """Full suffix table F[l, r] for every r <= budget: no windows, no pruning, no blocks."""
    n_layers, n_levels = errors.shape
    table = np.full((n_layers + 1, budget + 1), np.inf)
    table[n_layers] = 0.0
    for layer in range(n_layers - 1, -1, -1):
        for s in range(n_levels):
            t = times[layer, s]
            if t <= budget:
                cand = errors[layer, s] + table[layer + 1, : budget + 1 - t]
                np.minimum(table[layer, t:], cand, out=table[layer, t:])
    return table


def reference_dp(errors: np.ndarray, times: np.ndarray, budget: int, table=None):
    """The full-table DP with the same tie rule (back-tracking from F[0, budget])."""
    n_layers, n_levels = errors.shape
    if table is None:
        table = reference_table(errors, times, budget)
    levels, r = np.zeros(n_layers, dtype=np.int64), budget
    for layer in range(n_layers):
        for s in range(n_levels):
            t = times[layer, s]
            if t <= r and errors[layer, s] + table[layer + 1, r - t] == table[layer, r]:
                levels[layer], r = s, r - t
                break
    return levels, table[0, budget]


@pytest.mark.parametrize("seed", range(4))
def test_matches_full_table_dp_on_larger_instances(seed: int) -> None:
    """Windows and Pareto pruning at sizes brute force cannot reach, SPDY-like data included."""
    rng = np.random.default_rng(seed)
    n_layers, n_levels = 24, 12
    dense = rng.integers(5, 40, n_layers)
    frac = np.linspace(1.0, 0.1, n_levels) * rng.uniform(0.8, 1.2, (n_layers, n_levels))
    times = np.rint(dense[:, None] * frac).astype(np.int64)
    times[rng.random(times.shape) < 0.05] = 0
    if seed % 2:  # SPDY's prior: errors rise with the level, with exact ties between layers
        c = rng.integers(0, 4, n_layers)
        errors = c[:, None] * (np.arange(n_levels) / (n_levels - 1)) ** 2
    else:
        errors = rng.uniform(0, 1, (n_layers, n_levels))
    budget = int(0.5 * dense.sum())
    levels, total = solve(errors, times, budget)
    exp_levels, exp_total = reference_dp(errors, times, budget)
    np.testing.assert_array_equal(levels, exp_levels)
    assert total == exp_total


def test_matches_full_table_dp_with_rows_wider_than_a_kernel_block() -> None:
    rng = np.random.default_rng(100)
    for _ in range(30):
        times = rng.integers(0, 1500, (8, 6))
        errors = rng.integers(0, 5, (8, 6)) * 0.25  # exact in float64, many ties
        lo, hi = int(times.min(axis=1).sum()), int(times.max(axis=1).sum())
        budget = int(rng.integers(lo, hi))
        levels, total = solve(errors, times, budget)
        exp_levels, exp_total = reference_dp(errors, times, budget)
        np.testing.assert_array_equal(levels, exp_levels)
        assert total == exp_total


def test_every_budget_matches_one_full_table() -> None:
    """Sweep the budget so that back-tracking visits (nearly) every entry of every window."""
    rng = np.random.default_rng(5)
    times = rng.integers(0, 1200, (4, 5))
    errors = rng.integers(0, 6, (4, 5)) * 0.5
    lo, hi = int(times.min(axis=1).sum()), int(times.max(axis=1).sum())
    table = reference_table(errors, times, hi)
    for budget in range(lo, hi + 1, 2):
        levels, total = solve(errors, times, budget)
        assert total == table[0, budget]
        np.testing.assert_array_equal(levels, reference_dp(errors, times, budget, table)[0])


def test_every_window_entry_equals_the_full_table() -> None:
    """White-box: each row window (windows, pruning, kernel blocks) is bit-exact to the full
    table on wide rows, so an entry the answer happens not to visit cannot hide a bug."""
    rng = np.random.default_rng(11)
    for _ in range(5):
        times = rng.integers(0, 1500, (8, 6))
        errors = rng.uniform(0, 1, (8, 6))
        budget = int(times.min(axis=1).sum() + 0.6 * np.ptp(times, axis=1).sum())
        solver = DPSolver(times, budget)
        solver.solve(errors)
        table = reference_table(errors, times, budget)
        widths = solver._hi - solver._lo + 1
        assert widths.max() > 2048  # several kernel blocks per row
        for layer in range(9):
            start = solver._off[layer]
            window = solver._table[start : start + widths[layer]]
            lo, hi = solver._lo[layer], solver._hi[layer]
            np.testing.assert_array_equal(window, table[layer, lo : hi + 1])


def test_hand_examples() -> None:
    # Budget 3 allows one dense layer (2 + 1); both (0, 1) and (1, 0) cost 1: lower layer 0 wins.
    levels, total = solve([[0.0, 1.0], [0.0, 1.0]], [[2, 1], [2, 1]], 3)
    assert levels.tolist() == [0, 1] and total == 1.0
    # Budget met exactly through a zero-time prefix: layer 1's update at t = t_1^s reads the
    # prefix's time 0, the entry a prefix loop from t_l^s + 1 skips; it would return [0, 1].
    levels, total = solve([[1.0, 0.0], [0.0, 1.0]], [[0, 5], [3, 0]], 3)
    assert levels.tolist() == [0, 0] and total == 1.0
    # Zero-time levels everywhere with budget 0.
    levels, total = solve([[3.0, 1.0, 2.0]] * 3, [[0, 0, 1]] * 3, 0)
    assert levels.tolist() == [1, 1, 1] and total == 3.0
    # Equal error and time: the lower level.
    levels, _ = solve([[1.0, 1.0, 1.0]], [[4, 4, 4]], 4)
    assert levels.tolist() == [0]


def test_dominated_lower_level_kept_for_float_ties() -> None:
    # Level 1 is faster and "better" than level 0 by less than an ulp of the other layer's
    # error, so both profiles have the same float sum: the tie rule wants level 0.
    errors = np.array([[1e-17, 0.0], [1.0, 1.0]])
    times = np.array([[1, 0], [0, 0]])
    levels, total = solve(errors, times, 1)
    assert levels.tolist() == [0, 0] and total == 1.0
    assert 1e-17 + 1.0 == 1.0  # the premise


def test_accepts_float_integral_times_and_numpy_budget() -> None:
    levels, _ = solve(np.array([[0.0, 1.0]]), np.array([[2.0, 1.0]]), np.int64(1))
    assert levels.tolist() == [1]
    # Entries far above the budget are just infeasible, whatever their dtype.
    huge = np.array([[np.iinfo(np.uint64).max, 1]], dtype=np.uint64)
    assert solve([[0.0, 1.0]], huge, 5).levels.tolist() == [1]


@pytest.mark.parametrize(
    ("errors", "times", "budget", "match"),
    [
        ([[0.0, np.nan]], [[1, 1]], 2, r"errors must be finite.*errors\[0, 1\].*nan"),
        ([[0.0], [np.inf]], [[1], [1]], 2, r"errors\[1, 0\].*inf"),
        ([[0.0, 1.0]], [[1, np.nan]], 2, r"times must be finite.*times\[0, 1\]"),
        ([[0.0, 1.0]], [[1, np.inf]], 2, r"times must be finite"),
        ([[0.0, 1.0]], [[1, -2]], 2, r"times must be non-negative.*times\[0, 1\].*-2"),
        ([[0.0, 1.0]], [[1, 0.5]], 2, r"whole time buckets.*discretize"),
        ([[0.0, 1.0]], [[1, 1]], -1, r"budget must be a non-negative"),
        ([[0.0, 1.0]], [[1, 1]], 2.5, r"budget must be an integer"),
        ([[0.0, 1.0]], [[1, 1, 1]], 2, r"errors has shape \(1, 2\) but times has shape \(1, 3\)"),
        ([0.0, 1.0], [1, 1], 2, r"times must be a 2-D array"),
        ([[0.0, 1.0]], np.zeros((0, 2)), 2, r"at least one layer"),
        ([["a", "b"]], [[1, 1]], 2, r"errors must be a 2-D numeric array.*dtype"),
        ([[1e308, 0.0], [1e308, 0.0]], [[1, 1], [1, 1]], 2, r"overflow"),
        ([[0.0, 1.0], [0.0, 1.0]], [[3, 2], [4, 3]], 4, r"infeasible.*fastest.*5.*budget of 4"),
    ],
)
def test_errors_name_the_problem(errors, times, budget, match: str) -> None:
    with pytest.raises(PruneflowError, match=match):
        solve(errors, times, budget)


# ---------------------------------------------------------------------------------------------
# Discretization


def test_discretize_budget_formula_and_round_trip() -> None:
    # dense 10 ms, of which 8 ms prunable (2 ms fixed, e.g. skipped first/last layers); 2x:
    # budget = 10 / 2 - 2 = 3 ms; 100 buckets of 0.03 ms. Times on the bucket grid round-trip.
    ints = np.array([[100, 40, 10], [60, 30, 5], [50, 20, 0]])
    d = discretize(ints * 0.03, 10.0, 8.0, 2.0, buckets=100)
    assert d.budget == 100 and math.isclose(d.budget_ms, 3.0) and math.isclose(d.bucket_ms, 0.03)
    assert d.fixed_ms == pytest.approx(2.0)
    np.testing.assert_array_equal(d.times, ints)
    assert d.max_abs_rounding_ms < 1e-12 and d.mean_abs_rounding_ms < 1e-12
    assert d.max_overrun_ms < 1e-12
    levels, _ = solve(-d.times.astype(float), d.times, d.budget)  # the slowest that fits
    assert d.fits(levels)
    speed = d.predicted_speedup(levels)
    assert speed >= 2.0 - 1e-12
    assert speed == pytest.approx(predicted_speedup(ints * 0.03, levels, 10.0, 8.0))


@pytest.mark.parametrize("rounding", ["nearest", "up"])
def test_discretize_rounding_bounds(rounding: str) -> None:
    rng = np.random.default_rng(3)
    times_ms = rng.uniform(0.1, 2.0, (8, 6))
    times_ms[:, 0] = times_ms.max(axis=1) * 1.1  # dense level slowest
    dense = float(times_ms[:, 0].sum())
    d = discretize(times_ms, dense + 1.0, dense, 1.6, buckets=200, rounding=rounding)
    fits = d.times <= d.budget
    diff = np.abs(times_ms - d.times * d.bucket_ms)[fits]
    assert d.max_abs_rounding_ms == pytest.approx(diff.max())
    assert d.mean_abs_rounding_ms == pytest.approx(diff.mean())
    assert d.max_abs_rounding_ms <= (0.5 if rounding == "nearest" else 1.0) * d.bucket_ms + 1e-12
    assert (d.times[~fits] == d.budget + 1).all()
    for _ in range(40):
        errors = rng.uniform(0, 1, times_ms.shape)
        levels, _ = solve(errors, d.times, d.budget)
        overrun = d.real_time_ms(levels) - d.budget_ms
        assert overrun <= d.max_overrun_ms + 1e-9
        if rounding == "up":
            assert d.fits(levels) and d.predicted_speedup(levels) >= 1.6 - 1e-9
    if rounding == "up":
        assert d.max_overrun_ms == 0.0


def test_nearest_rounding_can_overrun_and_reports_it() -> None:
    # Budget 1.0 ms in 10 buckets of 0.1 ms. Both dense levels (0.54 ms) round down to 5
    # buckets, so the DP accepts 10 buckets = 1.0 ms while the real time is 1.08 ms.
    times_ms = np.array([[0.54, 0.2], [0.54, 0.2]])
    errors = np.array([[0.0, 1.0], [0.0, 1.0]])
    d = discretize(times_ms, 2.0, 2.0, 2.0, buckets=10)
    levels, _ = solve(errors, d.times, d.budget)
    assert levels.tolist() == [0, 0] and not d.fits(levels)
    assert d.max_overrun_ms == pytest.approx(0.08)
    assert d.real_time_ms(levels) - d.budget_ms <= d.max_overrun_ms + 1e-12
    # Rounding up (6 buckets each) allows only one dense layer, and that really fits.
    d_up = discretize(times_ms, 2.0, 2.0, 2.0, buckets=10, rounding="up")
    levels, _ = solve(errors, d_up.times, d_up.budget)
    assert levels.tolist() == [0, 1] and d_up.fits(levels) and d_up.max_overrun_ms == 0.0


def test_max_reachable_and_unreachable_target() -> None:
    times_ms = np.array([[4.0, 2.0, 1.0], [6.0, 3.0, 2.0]])
    # total 12 ms: 10 prunable + 2 fixed; fastest profile 3 ms -> 12 / 5 = 2.4x.
    assert max_reachable_speedup(times_ms, 12.0, 10.0) == pytest.approx(2.4)
    d = discretize(times_ms, 12.0, 10.0, 2.4, buckets=1000)  # exactly reachable
    assert solve(np.zeros((2, 3)), d.times, d.budget).levels.tolist() == [2, 2]
    with pytest.raises(PruneflowError, match=r"2\.5x is unreachable.*at most 2\.4x"):
        discretize(times_ms, 12.0, 10.0, 2.5)
    with pytest.raises(PruneflowError, match=r"unreachable.*at most 2\.4x"):
        discretize(times_ms, 12.0, 10.0, 7.0)  # budget below zero
    assert max_reachable_speedup([[1.0, 0.0]], 1.0, 1.0) == math.inf


def test_skipped_layers_count_as_fixed_time() -> None:
    # The authors' timing files' pitfall: prunable_dense must not include the skipped layers' time.
    times_ms = np.array([[2.0, 1.0], [2.0, 1.0]])
    right = discretize(times_ms, 10.0, 4.0, 1.25)  # 10 / 1.25 - 6 = 2 ms
    assert right.budget_ms == pytest.approx(2.0)
    levels, _ = solve(np.array([[0.0, 1.0], [0.0, 1.0]]), right.times, right.budget)
    assert levels.tolist() == [1, 1]
    assert right.predicted_speedup(levels) == pytest.approx(1.25)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(times_ms=[[1.0, np.nan]]), r"times_ms must be finite.*times_ms\[0, 1\]"),
        (dict(times_ms=[[1.0, -1.0]]), r"times_ms must be non-negative"),
        (dict(times_ms=[1.0, 0.5]), r"times_ms must be a 2-D array"),
        (dict(dense_total_ms=0.0), r"dense_total_ms must be finite and > 0"),
        (dict(dense_total_ms=math.inf), r"dense_total_ms must be finite"),
        (dict(prunable_dense_ms=11.0), r"prunable_dense_ms must lie in \[0, dense_total_ms"),
        (dict(prunable_dense_ms=-1.0), r"prunable_dense_ms must lie"),
        (dict(target_speedup=0.0), r"target_speedup must be finite and > 0"),
        (dict(target_speedup=math.nan), r"target_speedup must be finite"),
        (dict(buckets=0), r"buckets must be >= 1"),
        (dict(buckets=10.5), r"buckets must be an integer"),
        (dict(rounding="down"), r"rounding must be 'nearest' or 'up'"),
    ],
)
def test_discretize_errors(kwargs: dict, match: str) -> None:
    args = dict(
        times_ms=[[1.0, 0.5]], dense_total_ms=10.0, prunable_dense_ms=1.0, target_speedup=1.05
    )
    args.update(kwargs)
    with pytest.raises(PruneflowError, match=match):
        discretize(**args)


def test_within_rounding_of_max_target() -> None:
    # The fastest profile (0.55 ms) fits the 0.56 ms budget, but in 7 buckets of 0.08 ms both
    # layers round up to 4 buckets: 8 > 7.
    with pytest.raises(PruneflowError, match="within rounding"):
        discretize(np.array([[0.3], [0.25]]), 1.0, 1.0, 1.0 / 0.56, buckets=7, rounding="up")


def test_predicted_speedup_checks_levels() -> None:
    with pytest.raises(PruneflowError, match=r"levels\[1\] = 3 is not a level index in \[0, 1\]"):
        predicted_speedup([[1.0, 0.5], [1.0, 0.5]], [0, 3], 3.0, 2.0)
    with pytest.raises(PruneflowError, match=r"levels must be an integer array of shape \(2,\)"):
        predicted_speedup([[1.0, 0.5], [1.0, 0.5]], [0.0, 1.0], 3.0, 2.0)
    assert predicted_speedup([[1.0, 0.5], [1.0, 0.5]], [1, 1], 3.0, 2.0) == pytest.approx(1.5)


def test_prunable_time_a_rounding_above_the_total_is_the_total() -> None:
    # every layer profiled: the layers' dense times sum to the total up to float rounding
    times = np.array([[0.6, 0.3], [0.6147680000000003, 0.2]])
    assert max_reachable_speedup(times, 1.214768, 1.2147680000000003) == pytest.approx(
        1.214768 / 0.5
    )
    with pytest.raises(PruneflowError, match="prunable_dense_ms must lie in"):
        max_reachable_speedup(times, 1.214768, 1.3)
