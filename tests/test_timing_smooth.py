"""Smoothing a layer's times over the levels: local linear fit, then non-increasing."""

import numpy as np
import pytest

from pruneflow.errors import PruneflowError
from pruneflow.timing.smooth import nonincreasing, smooth_level_times


def test_nonincreasing_pools_violators_and_keeps_monotone_input():
    assert np.allclose(nonincreasing([5.0, 4.0, 3.0]), [5.0, 4.0, 3.0])
    assert np.allclose(nonincreasing([5.0, 3.0, 4.0, 1.0]), [5.0, 3.5, 3.5, 1.0])
    assert np.allclose(nonincreasing([1.0, 2.0, 3.0]), [2.0, 2.0, 2.0])
    out = nonincreasing(np.random.default_rng(0).random(50))
    assert np.all(np.diff(out) <= 1e-12)


def test_nonincreasing_is_the_least_squares_fit():
    # pooling preserves the sum: the mean of every pooled block is the mean of its values
    v = np.random.default_rng(1).random(30)
    assert nonincreasing(v).sum() == pytest.approx(v.sum())


def test_affine_times_are_reproduced_exactly():
    s = 1 - np.geomspace(0.6, 0.01, 20)
    t = 0.2 + 3.0 * (1 - s)  # fixed cost + work per nonzero
    assert np.allclose(smooth_level_times(s, t, 5), t)


def test_noise_shrinks_and_dips_are_filled():
    rng = np.random.default_rng(2)
    s = 1 - np.geomspace(0.6, 0.01, 40)
    truth = 0.2 + 3.0 * (1 - s)
    noisy = truth * (1 + 0.04 * rng.standard_normal(40))
    noisy[10] = truth[10] * 0.85  # a lucky sweep
    out = smooth_level_times(s, noisy, 5)
    assert np.abs(out / truth - 1).std() < 0.6 * np.abs(noisy / truth - 1).std()
    assert out[10] / truth[10] > 0.93
    assert np.all(np.diff(out) <= 1e-12)


def test_window_one_is_the_measurement_and_short_rows_work():
    s, t = np.array([0.4, 0.5, 0.6]), np.array([1.0, 1.2, 0.8])
    assert np.array_equal(smooth_level_times(s, t, 1), t)
    assert np.all(np.diff(smooth_level_times(s, t, 7)) <= 1e-12)  # window longer than the row
    assert smooth_level_times(s[:1], t[:1], 5).tolist() == [1.0]


def test_levels_far_apart_in_density_are_not_averaged():
    # a coarse grid: densities 0.5, 0.28, 0.16, 0.09, 0.05 (a factor 1.8 apart); dense wins at
    # the first level, so the times bend there: no line through all of them
    s = 1 - np.geomspace(0.5, 0.05, 5)
    t = np.array([4.0, 2.0, 1.2, 0.8, 0.6])
    assert np.allclose(smooth_level_times(s, t, 5), t)
    # the default grid's neighbours (a factor 1.1 apart) are
    fine = 1 - np.geomspace(0.6, 0.01, 41)
    noisy = 1.0 + 0.1 * (np.arange(41) % 2)
    assert np.ptp(smooth_level_times(fine, noisy, 5)[5:-5]) < 0.05


def test_bad_input_is_named():
    with pytest.raises(PruneflowError, match="window"):
        smooth_level_times([0.5, 0.6], [1.0, 0.9], 0)
    with pytest.raises(PruneflowError, match="one length"):
        smooth_level_times([0.5, 0.6], [1.0], 3)
    with pytest.raises(PruneflowError, match="ascending"):
        smooth_level_times([0.6, 0.5], [1.0, 0.9], 3)
