"""The four phases of sparse double descent, read off a test-accuracy-vs-sparsity curve.

He et al. (ICML'22, Sections 3-4) name them light (accuracy like the dense model's), critical
(worse: the sparser net still memorises the noisy labels, and does so harder), sweet (better
again: too few weights remain to memorise the noise) and collapsed (too few to learn the task).

A change along the curve counts only when it is larger than the curve's own uncertainty. Each
level's accuracy ``acc[i]`` comes with a standard error ``se[i]``
(:func:`level_standard_errors`): the test sample's binomial error ``sqrt(p (1 - p) / N)`` on
``N`` test images and, for a seed-mean curve, the spread over the seeds (``sd / sqrt(n)``),
added in quadrature as :func:`pruneflow.stats.mean_interval` does. The change from level ``i``
to level ``j`` is *significant* when

    |acc[j] - acc[i]| > k * sqrt(se[i]^2 + se[j]^2)

with ``k`` = ``sdd.phases.standard_errors`` (1: the change exceeds one standard error of the
difference). The rule, on the curve ordered by level (sparsity increasing):

1. Optionally smooth accuracy and standard error with a centred moving average over ``smooth``
   levels (windows truncated at the ends; the standard error is averaged, not shrunk, since
   every level is scored on the same test images).
2. **Light** runs from level 0 (dense) up to the level before the first *significant drop*
   below the dense accuracy. No such level: the whole curve is light.
3. ``peak`` = the level that ends the largest rise from the drop on: the level maximising
   ``acc[peak] - min(acc[drop..peak])`` (the first one on ties), and ``valley`` = the level of
   that minimum (the last one on ties, so a flat bottom is all critical). A double descent
   needs this rise to be significant. (The largest rise, not the highest level: just after
   the drop the curve may still lie above a sweet spot that is well above the valley.)
4. With a double descent: **critical** = drop..valley, **sweet** = valley+1 up to the level
   before the collapse, **collapsed** = from the first level after ``peak`` significantly below
   ``acc[peak]`` (none: no collapsed phase). A plateau after the peak therefore stays sweet
   instead of being cut at whichever level happened to score highest.
5. Without one: no critical or sweet phase; everything from the drop on is **collapsed**.

Boundaries are reported as the sparsities of each phase's first and last level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pruneflow.errors import PruneflowError

PHASES = ("light", "critical", "sweet", "collapsed")


@dataclass(frozen=True)
class PhaseResult:
    """Per-level labels and the phases' spans of one curve."""

    labels: list[str]
    smoothed: list[float]
    double_descent: bool
    # phase -> (first index, last index) into the curve, only for phases that occur
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    valley: int | None = None
    peak: int | None = None

    def table(self, sparsity: Sequence[float]) -> list[dict[str, Any]]:
        """One row per occurring phase: its level span and boundary sparsities."""
        rows = []
        for phase in PHASES:
            if phase in self.spans:
                first, last = self.spans[phase]
                rows.append(
                    {
                        "phase": phase,
                        "first_index": first,
                        "last_index": last,
                        "start_sparsity": float(sparsity[first]),
                        "end_sparsity": float(sparsity[last]),
                        "double_descent": self.double_descent,
                    }
                )
        return rows


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Centred moving average over ``window`` points (truncated at both ends)."""
    x = np.asarray(values, dtype=float)
    if window < 1:
        raise PruneflowError(f"smoothing window must be >= 1, got {window}")
    half = window // 2
    if half == 0 or x.size == 0:
        return x.copy()
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = x[max(0, i - half) : i + half + 1].mean()
    return out


def level_standard_errors(accuracies: np.ndarray, test_size: int) -> np.ndarray:
    """Standard error of the seed-mean accuracy at every level.

    ``accuracies`` is ``(seeds, levels)``; the error is ``sqrt(p (1 - p) / test_size + s^2 / n)``
    with ``p`` the mean, ``s`` the standard deviation over the ``n`` seeds (0 with one seed): the
    two sources :mod:`pruneflow.stats` combines into its intervals.
    """
    acc = np.atleast_2d(np.asarray(accuracies, dtype=float))
    if isinstance(test_size, bool) or not isinstance(test_size, (int, np.integer)) or test_size < 1:
        raise PruneflowError(f"phases: the test set size must be an integer >= 1, got {test_size}")
    n = acc.shape[0]
    p = np.clip(acc.mean(axis=0), 0.0, 1.0)
    var = p * (1.0 - p) / int(test_size)
    if n >= 2:
        var = var + acc.var(axis=0, ddof=1) / n
    return np.sqrt(var)


def largest_rise(accuracy: Sequence[float], start: int) -> tuple[int, int]:
    """(valley, peak) of the largest rise from ``start`` on: ``peak`` maximises
    ``acc[peak] - min(acc[start..peak])`` (the first on ties), ``valley`` is where that minimum
    is (the last on ties, so a flat bottom belongs to the critical phase). No rise at all
    (a curve that only falls): ``valley == peak``."""
    a = np.asarray(accuracy, dtype=float)[start:]
    if a.size == 0:
        raise PruneflowError(f"phases: no levels from level {start} on")
    peak = int(np.argmax(a - np.minimum.accumulate(a)))
    floor = a[: peak + 1]
    valley = floor.size - 1 - int(np.argmin(floor[::-1]))
    return start + valley, start + peak


def _check(s: np.ndarray, acc: np.ndarray, se: np.ndarray, standard_errors: float) -> None:
    if s.ndim != 1 or s.shape != acc.shape or s.size == 0:
        raise PruneflowError(
            f"phases need equal-length, non-empty sparsity and accuracy lists, "
            f"got {s.shape} and {acc.shape}"
        )
    if se.shape != acc.shape:
        raise PruneflowError(f"phases: {se.size} standard errors for {acc.size} levels")
    if not (np.isfinite(s).all() and np.isfinite(acc).all() and np.isfinite(se).all()):
        raise PruneflowError("phases: sparsity, accuracy and standard error must be finite")
    if (se < 0).any():
        raise PruneflowError("phases: standard errors must be >= 0")
    if np.any(np.diff(s) <= 0):
        raise PruneflowError("phases: the curve must be ordered by strictly increasing sparsity")
    k = standard_errors
    if not (isinstance(k, (int, float)) and k > 0 and math.isfinite(k)):
        raise PruneflowError(f"phases: standard_errors must be > 0, got {k!r}")


def label_phases(
    sparsity: Sequence[float],
    test_acc: Sequence[float],
    standard_error: Sequence[float] | float,
    window: int = 1,
    standard_errors: float = 1.0,
) -> PhaseResult:
    """Label every point of the curve light / critical / sweet / collapsed (module docstring).

    ``standard_error``: per level (or one value for all levels), in accuracy units.
    """
    s = np.asarray(sparsity, dtype=float)
    acc = np.asarray(test_acc, dtype=float)
    se = np.asarray(standard_error, dtype=float)
    if se.ndim == 0:
        se = np.full(acc.shape, float(se))
    _check(s, acc, se, standard_errors)
    a, u = smooth(acc, window), smooth(se, window)
    n = a.size

    def below(ref: int, start: int) -> np.ndarray:
        """Levels from ``start`` on significantly below level ``ref``."""
        threshold = standard_errors * np.sqrt(u[ref] ** 2 + u[start:] ** 2)
        return start + np.flatnonzero(a[start:] < a[ref] - threshold)

    labels = ["light"] * n
    drops = below(0, 1) if n > 1 else np.array([], dtype=int)
    if drops.size == 0:
        return PhaseResult(labels, a.tolist(), False, {"light": (0, n - 1)})
    drop = int(drops[0])
    valley, peak = largest_rise(a, drop)
    spans = {"light": (0, drop - 1)}
    rise = a[peak] - a[valley] > standard_errors * math.hypot(u[peak], u[valley])
    if peak > valley and rise:
        after = below(peak, peak + 1)
        collapse = int(after[0]) if after.size else n
        spans |= {"critical": (drop, valley), "sweet": (valley + 1, collapse - 1)}
        if collapse < n:
            spans["collapsed"] = (collapse, n - 1)
        double_descent = True
    else:
        spans["collapsed"] = (drop, n - 1)
        valley = peak = None
        double_descent = False
    for phase, (first, last) in spans.items():
        labels[first : last + 1] = [phase] * (last - first + 1)
    return PhaseResult(labels, a.tolist(), double_descent, spans, valley, peak)
