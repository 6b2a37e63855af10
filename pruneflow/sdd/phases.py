"""The four phases of sparse double descent, read off a test-accuracy-vs-sparsity curve.

He et al. name them light (accuracy like the dense model's), critical (worse: the sparser net
still memorises the noisy labels, and does so harder), sweet (better again: too few weights
remain to memorise the noise) and collapsed (too few to learn the task).

The rule, on the curve ordered by level (sparsity increasing), with tolerance ``tol``:

1. Smooth the test accuracy with a centred moving average over ``smooth`` levels (windows are
   truncated at the ends), so one lucky or unlucky level does not move a boundary.
2. ``ref`` = the smoothed accuracy at level 0 (dense). **Light** runs from level 0 up to the
   level before the first *significant drop*: the first level whose smoothed accuracy is below
   ``ref - tol``. No such level: the whole curve is light.
3. Let ``peak`` = the level of the highest smoothed accuracy from the drop on (the first one on
   ties) and ``valley`` = the level of the lowest smoothed accuracy from the drop up to ``peak``
   (the last one on ties, so a flat bottom is all critical).
   A double descent needs the curve to come back up: ``peak > valley`` and
   ``acc[peak] - acc[valley] >= tol``.
4. With a double descent: **critical** = drop..valley, **sweet** = valley+1 up to the level
   before the collapse, **collapsed** = from the first level after ``peak`` whose smoothed
   accuracy is below ``acc[peak] - tol`` (none: no collapsed phase). A plateau after the peak
   therefore stays sweet instead of being cut at whichever level happened to score highest.
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


def label_phases(
    sparsity: Sequence[float], test_acc: Sequence[float], tolerance: float = 0.01, window: int = 3
) -> PhaseResult:
    """Label every point of the curve light / critical / sweet / collapsed (module docstring)."""
    s = np.asarray(sparsity, dtype=float)
    acc = np.asarray(test_acc, dtype=float)
    if s.ndim != 1 or s.shape != acc.shape or s.size == 0:
        raise PruneflowError(
            f"phases need equal-length, non-empty sparsity and accuracy lists, "
            f"got {s.shape} and {acc.shape}"
        )
    if not (np.isfinite(s).all() and np.isfinite(acc).all()):
        raise PruneflowError("phases: sparsity and test accuracy must be finite numbers")
    if np.any(np.diff(s) <= 0):
        raise PruneflowError("phases: the curve must be ordered by strictly increasing sparsity")
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1 and math.isfinite(tolerance)):
        raise PruneflowError(f"phases: tolerance must be in (0, 1), got {tolerance!r}")
    a = smooth(acc, window)
    n = a.size
    labels = ["light"] * n
    below = np.flatnonzero(a < a[0] - tolerance)
    if below.size == 0:
        return PhaseResult(labels, a.tolist(), False, {"light": (0, n - 1)})
    drop = int(below[0])
    peak = drop + int(np.argmax(a[drop:]))
    # the last level of the lowest floor: a flat bottom belongs to the critical phase
    floor = a[drop : peak + 1]
    valley = drop + floor.size - 1 - int(np.argmin(floor[::-1]))
    spans = {"light": (0, drop - 1)} if drop > 0 else {}
    if peak > valley and a[peak] - a[valley] >= tolerance:
        after = np.flatnonzero(a[peak + 1 :] < a[peak] - tolerance)
        collapse = peak + 1 + int(after[0]) if after.size else n
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
