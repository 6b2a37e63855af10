"""A profile's speedup checked end to end, and re-aimed until the measurement meets its target.

SPDY (Frantar & Alistarh, ICML'22, Sec. 3.1) solves for the most accurate profile whose
*predicted* time fits the budget: the timing table's per-layer entries summed with the
remainder. The search then picks, among thousands of profiles, one that the table rates fast,
and so favours the entries the table under-prices (a layer's 99% entry is a 50-80 us call
whose measured quantile swings most with the host). The baselines meet the table's budget
with coarser rules (one grid level for every layer) and land above it. What the comparison
promises is equal *measured* speedup, so every profile is run end to end against the dense
model, and one that measures outside ``target x (1 -/+ tolerance)`` is chosen again by its
own rule (SPDY's: the DP with the sensitivities its search found, no new search) for a
corrected aim, and measured again, up to ``rounds`` times.

The corrected aim removes what the table was seen to get wrong: a profile predicted at ``P``
and measured at ``M`` asks the table for ``target * P / M``. Short of the target (``M <
target``), that is above ``P``, so the next profile is faster by the table; past it, below
``P``, so the next one prunes less. Of the attempts that meet the target (measured at least
``target x (1 - tolerance)``), the one measured slowest is kept: the least pruning that
measurably meets it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pruneflow.errors import PruneflowError

__all__ = ["Attempt", "meet_measured_target"]


@dataclass(frozen=True)
class Attempt:
    """One solve-and-measure round: the target the DP aimed at, its profile, the table's
    speedup for it and the measured one."""

    aim: float
    levels: tuple[int, ...]
    predicted: float
    measured: float


def meet_measured_target(
    target: float,
    solve: Callable[[float], Sequence[int] | None],
    predict: Callable[[Sequence[int]], float],
    measure: Callable[[Sequence[int]], float],
    *,
    rounds: int,
    tolerance: float,
    first: Sequence[int] | None = None,
) -> tuple[Attempt, list[Attempt]]:
    """The profile kept for ``target`` and every attempt made (module docstring).

    ``solve(aim)`` is the profile the rule chooses for speedup ``aim`` by the table (``None``
    when the table cannot reach it), ``predict(levels)`` the table's speedup for a profile and
    ``measure`` the measured one; ``first`` is the profile already chosen for ``target``
    (solved otherwise). It stops at the first profile measured within ``target x (1 -/+
    tolerance)``, after ``rounds`` re-aims, or when the next aim is out of the table's reach
    or brings back a profile already measured. Kept: the slowest attempt that meets
    ``target x (1 - tolerance)``; if none does, the fastest."""
    if rounds < 0:
        raise PruneflowError(f"verify rounds must be >= 0, got {rounds}")
    if not 0.0 <= tolerance < 1.0:
        raise PruneflowError(f"verify tolerance must be in [0, 1), got {tolerance}")
    low, high = target * (1.0 - tolerance), target * (1.0 + tolerance)
    aim = float(target)
    levels = first if first is not None else solve(aim)
    if levels is None:
        raise PruneflowError(f"target speedup {target:g}x is unreachable on the timing table")
    tried: list[Attempt] = []
    while True:
        attempt = Attempt(
            aim, tuple(int(v) for v in levels), float(predict(levels)), float(measure(levels))
        )
        tried.append(attempt)
        if low <= attempt.measured <= high or len(tried) > rounds:
            break
        aim = target * attempt.predicted / attempt.measured
        nxt = solve(aim)
        if nxt is None or tuple(int(v) for v in nxt) in {a.levels for a in tried}:
            break
        levels = nxt
    meeting = [a for a in tried if a.measured >= low]
    if meeting:
        return min(meeting, key=lambda a: a.measured), tried
    return max(tried, key=lambda a: a.measured), tried
