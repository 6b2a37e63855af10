import math

import pytest

from pruneflow.claims import Claim, claims_metrics
from pruneflow.stats import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    combine,
    mean_interval,
    paired_difference,
    verdict,
)


def test_one_seed_interval_is_the_binomial_error_of_the_test_sample():
    est = mean_interval([0.97], test_size=1000)
    se = math.sqrt(0.97 * 0.03 / 1000)
    assert est.n == 1
    assert est.half_width == pytest.approx(1.959964 * se, rel=1e-5)
    assert mean_interval([0.97]).half_width == 0.0


def test_seed_interval_is_student_t_plus_test_sample_error():
    xs = [0.95, 0.96, 0.97]
    sd = 0.01
    est = mean_interval(xs)
    assert est.mean == pytest.approx(0.96)
    assert est.half_width == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-5)
    wider = mean_interval(xs, test_size=1000)
    assert wider.half_width > est.half_width


def test_paired_difference_uses_the_pairs_not_the_spreads():
    # both methods vary a lot over seeds, but one is always 0.5 points above the other
    a = [0.90, 0.95, 0.93]
    b = [0.895, 0.945, 0.925]
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(0.005)
    assert d.half_width == pytest.approx(0.0, abs=1e-12)
    assert verdict(d) == REPRODUCED
    noisy = paired_difference([0.90, 0.95, 0.93], [0.91, 0.94, 0.92])
    assert verdict(noisy) == INCONCLUSIVE


def test_single_pair_is_inconclusive_below_the_binomial_error():
    assert verdict(paired_difference([0.975], [0.970], test_size=1000)) == INCONCLUSIVE
    assert verdict(paired_difference([0.975], [0.90], test_size=1000)) == REPRODUCED
    assert verdict(paired_difference([0.90], [0.975], test_size=1000)) == NOT_REPRODUCED


def test_paired_difference_refuses_unpaired_runs():
    with pytest.raises(ValueError, match="3 values against 2"):
        paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="non-finite"):
        mean_interval([float("nan")])


def test_combined_verdict():
    assert combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combine([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([REPRODUCED, NOT_REPRODUCED]) == NOT_REPRODUCED
    assert combine([]) == INCONCLUSIVE


def test_claims_metrics_scores_each_verdict():
    claims = [
        Claim("SPDY", "spdy.vs_uniform", "SPDY above uniform", "+0.6 [0.2, 1.0]", REPRODUCED),
        Claim("CHEX", "chex.vs_ptf", "CHEX above PTF", "-0.1 [-0.9, 0.7]", INCONCLUSIVE),
    ]
    m = claims_metrics(claims)
    assert m["spdy.vs_uniform"]["score"] == 1
    assert m["chex.vs_ptf"]["score"] == 0
    with pytest.raises(ValueError, match="verdict"):
        Claim("x", "x", "x", "x", "wins")
