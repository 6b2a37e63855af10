"""Sparse double descent: phase labelling on synthetic test-accuracy curves, changes counted
against the curve's standard errors."""

import numpy as np
import pytest

from pruneflow.errors import PruneflowError
from pruneflow.sdd.phases import label_phases, level_standard_errors, smooth
from pruneflow.sdd.schedule import schedule

S = schedule(0.2, 0.999)  # 31 pruned levels, like the full preset's sweep
N = len(S)
SE = 0.005  # a standard error of half a point at every level: changes > 0.71 points count


def _double_descent(noise=0.0, seed=0):
    """Flat, dip to 0.78 around level 14, peak 0.88 around level 23, collapse after 27."""
    x = np.arange(N, dtype=float)
    acc = np.full(N, 0.82)
    acc -= 0.04 * np.exp(-(((x - 14) / 2.5) ** 2))
    acc += 0.06 * np.exp(-(((x - 23) / 3.0) ** 2))
    acc[28:] -= np.array([0.05, 0.15, 0.3, 0.5])
    return acc + np.random.default_rng(seed).normal(0, noise, N)


def test_clean_double_descent_has_four_phases_in_order():
    r = label_phases(S, _double_descent(), SE, window=3)
    assert r.double_descent
    order = [p for i, p in enumerate(r.labels) if i == 0 or r.labels[i - 1] != p]
    assert order == ["light", "critical", "sweet", "collapsed"]
    assert 10 <= r.spans["critical"][0] <= 13 and r.spans["critical"][1] == r.valley
    assert 13 <= r.valley <= 15 and 22 <= r.peak <= 24
    # collapse: the first level after the peak significantly below it (here the flank)
    smoothed = np.asarray(r.smoothed)
    threshold = SE * np.sqrt(2)
    first_low = (
        r.peak + 1 + int(np.flatnonzero(smoothed[r.peak + 1 :] < smoothed[r.peak] - threshold)[0])
    )
    assert r.spans["collapsed"] == (first_low, N - 1) and 24 <= first_low <= 28
    table = {row["phase"]: row for row in r.table(S)}
    assert table["light"]["start_sparsity"] == 0.0
    assert table["critical"]["start_sparsity"] == pytest.approx(S[r.spans["critical"][0]])
    assert table["collapsed"]["end_sparsity"] == pytest.approx(S[-1])


@pytest.mark.parametrize("seed", range(5))
def test_noisy_double_descent_is_still_found(seed):
    r = label_phases(S, _double_descent(noise=0.004, seed=seed), 0.007, window=3)
    assert r.double_descent
    assert 11 <= r.valley <= 17 and 20 <= r.peak <= 26
    assert r.labels[0] == "light" and r.labels[-1] == "collapsed"


def test_monotone_decline_has_no_critical_or_sweet_phase():
    acc = np.r_[np.full(15, 0.9), np.linspace(0.89, 0.2, N - 15)]
    r = label_phases(S, acc, SE, window=3)
    assert not r.double_descent
    assert set(r.labels) == {"light", "collapsed"}
    assert "critical" not in r.spans and "sweet" not in r.spans


def test_small_wiggles_within_the_standard_error_are_not_a_double_descent():
    rng = np.random.default_rng(1)
    acc = np.r_[0.9 + rng.uniform(-0.003, 0.003, 25), [0.85, 0.7, 0.5, 0.3, 0.2, 0.15, 0.1]]
    r = label_phases(S, acc, SE, window=3)
    assert not r.double_descent and r.labels[:23] == ["light"] * 23


def test_flat_curve_is_light_throughout():
    r = label_phases(S, np.full(N, 0.9), SE)
    assert r.labels == ["light"] * N and r.spans == {"light": (0, N - 1)}


def test_a_single_bad_level_does_not_open_a_critical_phase():
    acc = np.full(N, 0.9)
    acc[10] = 0.88  # one unlucky level; smoothed drop 0.0067 < sqrt(2) x 0.005
    acc[26:] = [0.8, 0.6, 0.4, 0.3, 0.2, 0.1]
    r = label_phases(S, acc, SE, window=3)
    assert r.labels[10] == "light" and not r.double_descent


def test_plateau_after_the_peak_stays_sweet_until_a_real_drop():
    acc = np.r_[
        np.full(8, 0.82),
        np.full(6, 0.76),
        [0.85, 0.86, 0.861, 0.859, 0.86, 0.858],
        np.linspace(0.8, 0.2, N - 20),
    ]
    r = label_phases(S, acc, SE, window=1)
    assert r.double_descent
    assert r.spans["sweet"] == (14, 19) and r.spans["collapsed"][0] == 20


def test_smoothing_is_a_truncated_centred_mean():
    assert smooth([1.0, 2.0, 3.0, 10.0], 3).tolist() == pytest.approx([1.5, 2.0, 5.0, 6.5])
    assert smooth([1.0, 5.0], 1).tolist() == [1.0, 5.0]


def test_bad_curves_are_rejected():
    with pytest.raises(PruneflowError, match="equal-length"):
        label_phases([0.0, 0.5], [0.9], SE)
    with pytest.raises(PruneflowError, match="increasing sparsity"):
        label_phases([0.0, 0.5, 0.4], [0.9, 0.9, 0.9], SE)
    with pytest.raises(PruneflowError, match="finite"):
        label_phases([0.0, 0.5], [0.9, float("nan")], SE)
    with pytest.raises(PruneflowError, match="3 standard errors for 2 levels"):
        label_phases([0.0, 0.5], [0.9, 0.8], [SE] * 3)
    with pytest.raises(PruneflowError, match="standard_errors must be > 0"):
        label_phases([0.0, 0.5], [0.9, 0.8], SE, standard_errors=0)


# the default sweep's shape (prune fraction 0.4, 15 levels), scored on 1,000 test images
S15 = schedule(0.4, 0.999)


def _dip_and_rise(dip: float, rise: float) -> np.ndarray:
    """Dense 0.84, flat to level 4, down by ``dip`` at level 7, up by ``rise`` at level 10,
    collapse over the last three levels."""
    acc = np.full(len(S15), 0.84)
    acc[5:8] = 0.84 - dip * np.array([1 / 3, 2 / 3, 1.0])
    acc[8:11] = 0.84 - dip + rise * np.array([1 / 3, 2 / 3, 1.0])
    acc[11:] = 0.84 - dip + rise - np.array([0.05, 0.15, 0.3, 0.45])
    return acc


def test_a_dip_smaller_than_the_binomial_error_is_not_a_dip():
    se = level_standard_errors(_dip_and_rise(0.01, 0.01)[None, :], test_size=1000)
    assert 0.0114 < se[0] < 0.0117  # sqrt(0.84 x 0.16 / 1000)
    r = label_phases(S15, _dip_and_rise(0.01, 0.01), se)
    assert not r.double_descent and "critical" not in r.spans
    assert r.labels[:11] == ["light"] * 11 and r.labels[-1] == "collapsed"


def test_a_clear_dip_and_rise_are_the_four_phases():
    acc = _dip_and_rise(0.06, 0.045)
    r = label_phases(S15, acc, level_standard_errors(acc[None, :], test_size=1000))
    assert r.double_descent and (r.valley, r.peak) == (7, 10)
    order = [p for i, p in enumerate(r.labels) if i == 0 or r.labels[i - 1] != p]
    assert order == ["light", "critical", "sweet", "collapsed"]
    # the same curve on 100 test images: a 6-point dip is within the error of the difference
    r = label_phases(S15, acc, level_standard_errors(acc[None, :], test_size=100))
    assert not r.double_descent


def test_the_spread_over_seeds_widens_the_errors():
    base = _dip_and_rise(0.03, 0.03)
    tight = np.stack([base + d for d in (-0.002, 0.0, 0.002)])
    loose = np.stack([base + d for d in (-0.04, 0.0, 0.04)])
    assert label_phases(S15, tight.mean(0), level_standard_errors(tight, 1000)).double_descent
    se = level_standard_errors(loose, 1000)
    assert np.all(se > 0.02)  # sqrt(binomial var + 0.04^2 / 3)
    assert not label_phases(S15, loose.mean(0), se).double_descent


def test_more_standard_errors_make_the_rule_stricter():
    acc = _dip_and_rise(0.03, 0.025)
    se = level_standard_errors(acc[None, :], 1000)
    assert label_phases(S15, acc, se, standard_errors=1.0).double_descent
    assert not label_phases(S15, acc, se, standard_errors=2.0).double_descent


def test_the_sweet_spot_may_lie_below_the_first_critical_levels():
    # the curve falls 2.5 points, keeps falling to a valley 6 points down, then rises 4 points:
    # the sweet spot (0.82) is below level 2 (0.825) but far above the valley
    acc = np.array([0.85, 0.84, 0.825, 0.82, 0.81, 0.80, 0.795, 0.79, 0.80, 0.815, 0.83, 0.81])
    acc = np.r_[acc, [0.7, 0.6, 0.5]]
    r = label_phases(S15, acc, level_standard_errors(acc[None, :], 1000))
    assert r.double_descent and (r.valley, r.peak) == (7, 10)
    assert r.spans["sweet"] == (8, 10) and r.spans["collapsed"] == (11, 14)
