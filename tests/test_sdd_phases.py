"""Sparse double descent: phase labelling on synthetic test-accuracy curves."""

import numpy as np
import pytest

from pruneflow.errors import PruneflowError
from pruneflow.sdd.phases import label_phases, smooth
from pruneflow.sdd.schedule import schedule

S = schedule(0.2, 0.999)  # 31 pruned levels, like the default sweep
N = len(S)


def _double_descent(noise=0.0, seed=0):
    """Flat, dip to 0.78 around level 14, peak 0.88 around level 23, collapse after 27."""
    x = np.arange(N, dtype=float)
    acc = np.full(N, 0.82)
    acc -= 0.04 * np.exp(-(((x - 14) / 2.5) ** 2))
    acc += 0.06 * np.exp(-(((x - 23) / 3.0) ** 2))
    acc[28:] -= np.array([0.05, 0.15, 0.3, 0.5])
    return acc + np.random.default_rng(seed).normal(0, noise, N)


def test_clean_double_descent_has_four_phases_in_order():
    r = label_phases(S, _double_descent(), tolerance=0.01, window=3)
    assert r.double_descent
    order = [p for i, p in enumerate(r.labels) if i == 0 or r.labels[i - 1] != p]
    assert order == ["light", "critical", "sweet", "collapsed"]
    assert 10 <= r.spans["critical"][0] <= 13 and r.spans["critical"][1] == r.valley
    assert 13 <= r.valley <= 15 and 22 <= r.peak <= 24
    # collapse: the first level after the peak that is a tolerance below it (here the flank)
    smoothed = np.asarray(r.smoothed)
    first_low = (
        r.peak + 1 + int(np.flatnonzero(smoothed[r.peak + 1 :] < smoothed[r.peak] - 0.01)[0])
    )
    assert r.spans["collapsed"] == (first_low, N - 1) and 24 <= first_low <= 28
    table = {row["phase"]: row for row in r.table(S)}
    assert table["light"]["start_sparsity"] == 0.0
    assert table["critical"]["start_sparsity"] == pytest.approx(S[r.spans["critical"][0]])
    assert table["collapsed"]["end_sparsity"] == pytest.approx(S[-1])


@pytest.mark.parametrize("seed", range(5))
def test_noisy_double_descent_is_still_found(seed):
    r = label_phases(S, _double_descent(noise=0.004, seed=seed), tolerance=0.01, window=3)
    assert r.double_descent
    assert 11 <= r.valley <= 17 and 20 <= r.peak <= 26
    assert r.labels[0] == "light" and r.labels[-1] == "collapsed"


def test_monotone_decline_has_no_critical_or_sweet_phase():
    acc = np.r_[np.full(15, 0.9), np.linspace(0.89, 0.2, N - 15)]
    r = label_phases(S, acc, tolerance=0.01, window=3)
    assert not r.double_descent
    assert set(r.labels) == {"light", "collapsed"}
    assert "critical" not in r.spans and "sweet" not in r.spans


def test_small_wiggles_within_tolerance_are_not_a_double_descent():
    rng = np.random.default_rng(1)
    acc = np.r_[0.9 + rng.uniform(-0.003, 0.003, 25), [0.85, 0.7, 0.5, 0.3, 0.2, 0.15, 0.1]]
    r = label_phases(S, acc, tolerance=0.01, window=3)
    assert not r.double_descent and r.labels[:23] == ["light"] * 23


def test_flat_curve_is_light_throughout():
    r = label_phases(S, np.full(N, 0.9), tolerance=0.01)
    assert r.labels == ["light"] * N and r.spans == {"light": (0, N - 1)}


def test_a_single_bad_level_does_not_open_a_critical_phase():
    acc = np.full(N, 0.9)
    acc[10] = 0.88  # one unlucky level; smoothed drop 0.0067 < tolerance
    acc[26:] = [0.8, 0.6, 0.4, 0.3, 0.2, 0.1]
    r = label_phases(S, acc, tolerance=0.01, window=3)
    assert r.labels[10] == "light" and not r.double_descent


def test_plateau_after_the_peak_stays_sweet_until_a_real_drop():
    acc = np.r_[
        np.full(8, 0.82),
        np.full(6, 0.76),
        [0.85, 0.86, 0.861, 0.859, 0.86, 0.858],
        np.linspace(0.8, 0.2, N - 20),
    ]
    r = label_phases(S, acc, tolerance=0.01, window=1)
    assert r.double_descent
    assert r.spans["sweet"] == (14, 19) and r.spans["collapsed"][0] == 20


def test_smoothing_is_a_truncated_centred_mean():
    assert smooth([1.0, 2.0, 3.0, 10.0], 3).tolist() == pytest.approx([1.5, 2.0, 5.0, 6.5])
    assert smooth([1.0, 5.0], 1).tolist() == [1.0, 5.0]


def test_bad_curves_are_rejected():
    with pytest.raises(PruneflowError, match="equal-length"):
        label_phases([0.0, 0.5], [0.9])
    with pytest.raises(PruneflowError, match="increasing sparsity"):
        label_phases([0.0, 0.5, 0.4], [0.9, 0.9, 0.9])
    with pytest.raises(PruneflowError, match="finite"):
        label_phases([0.0, 0.5], [0.9, float("nan")])
