"""Means, 95% intervals and paired differences for the report's comparisons.

Every comparison in pruneflow states n, the mean, a 95% interval and the paired difference to
the method's baseline. Two sources of uncertainty are accounted for:

* the training run (seed): with ``n >= 2`` seeds, a Student-t interval over the seeds (the
  paired one over the per-seed differences when two methods share their seeds);
* the test sample: an accuracy measured on ``N`` test images has a binomial standard error of
  ``sqrt(p (1 - p) / N)`` (0.54 points at 97% on 1,000 images). With one seed this is the only
  estimate there is; with more it is added in quadrature to the mean's standard error (every
  seed is scored on the same test images, so averaging seeds does not shrink it).

A paired difference with a single seed uses the binomial error of both accuracies as if they
were independent, which is conservative: the same images make two models' errors correlated.

:func:`verdict` reads a claim off an interval: *reproduced* when the whole interval is on the
claimed side, *not reproduced* when it is wholly on the other side, *inconclusive* otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)


@dataclass(frozen=True)
class Estimate:
    """A mean with its interval: ``low <= mean <= high`` at :data:`CONFIDENCE`."""

    n: int
    mean: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def format(self, scale: float = 1.0, digits: int = 2, signed: bool = False) -> str:
        """``97.41 [97.02, 97.80]`` (``scale=100`` turns fractions into points)."""
        sign = "+" if signed else ""
        m, lo, hi = self.mean * scale, self.low * scale, self.high * scale
        return f"{m:{sign}.{digits}f} [{lo:{sign}.{digits}f}, {hi:{sign}.{digits}f}]"


def _quantile(n: int) -> float:
    """The two-sided critical value: Student's t with n - 1 degrees of freedom, normal at n=1."""
    # imported here: scipy.stats costs every process that imports the steps a second of CPU
    # at start-up (numpy.f2py, scipy's array API), and most never compute an interval
    from scipy import stats as _scipy_stats

    if n < 2:
        return float(_scipy_stats.norm.ppf(0.5 + CONFIDENCE / 2))
    return float(_scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1))


def _binomial_var(p: float, test_size: int | None) -> float:
    if not test_size:
        return 0.0
    p = min(max(p, 0.0), 1.0)
    return p * (1.0 - p) / test_size


def _check(values: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{what}: no values")
    if any(not math.isfinite(v) for v in out):
        raise ValueError(f"{what}: non-finite value in {out}")
    return out


def mean_interval(values: Sequence[float], test_size: int | None = None) -> Estimate:
    """Mean over seeds of an accuracy (a fraction) with its 95% interval.

    ``test_size`` (the number of test images each value was measured on) adds the binomial
    error of the test sample; without it a single value has a zero-width interval.
    """
    xs = _check(values, "mean_interval")
    n = len(xs)
    mean = sum(xs) / n
    var = _binomial_var(mean, test_size)
    if n >= 2:
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
        var += sd * sd / n
    half = _quantile(n) * math.sqrt(var)
    return Estimate(n, mean, mean - half, mean + half)


def paired_difference(
    a: Sequence[float], b: Sequence[float], test_size: int | None = None
) -> Estimate:
    """Mean of ``a[i] - b[i]`` (runs paired by seed) with its 95% interval.

    With two or more pairs: a paired t-interval over the differences. With one pair: the
    binomial errors of both accuracies on ``test_size`` images, combined as if independent.
    """
    xs, ys = _check(a, "paired_difference"), _check(b, "paired_difference")
    if len(xs) != len(ys):
        raise ValueError(f"paired_difference: {len(xs)} values against {len(ys)}")
    diffs = [x - y for x, y in zip(xs, ys, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    if n >= 2:
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        var = sd * sd / n
    else:
        var = _binomial_var(xs[0], test_size) + _binomial_var(ys[0], test_size)
    half = _quantile(n) * math.sqrt(var)
    return Estimate(n, mean, mean - half, mean + half)


def paired_by_seed(
    a: Mapping[int, float], b: Mapping[int, float], test_size: int | None = None
) -> Estimate | None:
    """:func:`paired_difference` of two methods' runs keyed by seed, over the seeds both ran
    (None when they share none)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return paired_difference([a[s] for s in seeds], [b[s] for s in seeds], test_size)


def verdict(interval: Estimate, margin: float = 0.0) -> str:
    """The claim "the difference is above ``margin``" read off a difference's interval."""
    if interval.low > margin:
        return REPRODUCED
    if interval.high < margin:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """A claim made of several parts: reproduced only if every part is; not reproduced if any
    part is; inconclusive otherwise."""
    parts = list(verdicts)
    if not parts:
        return INCONCLUSIVE
    if any(v == NOT_REPRODUCED for v in parts):
        return NOT_REPRODUCED
    if all(v == REPRODUCED for v in parts):
        return REPRODUCED
    return INCONCLUSIVE
