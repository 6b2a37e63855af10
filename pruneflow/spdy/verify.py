"""A profile's speedup checked end to end, and the DP re-aimed until the measurement meets it.

SPDY (Frantar & Alistarh, ICML'22, Sec. 3.1) solves for the most accurate profile whose
*predicted* time fits the budget: the timing table's per-layer entries summed with the
remainder. The search then picks, among thousands of profiles, one that the table rates fast,
and so favours the entries the table under-prices (a layer's 99% entry is a 50-80 us call
whose measured quantile swings most with the host). What is promised is a measured speedup,
so the chosen profile is run end to end against the dense model; when it falls short of the
target, the DP is solved again with the search's sensitivities (the same error matrix, no
new search) for a target raised by the shortfall, and measured again, up to ``rounds``
times. The table's accuracy is unchanged; the profile stops relying on where it errs.

The raised target corrects the table by what it was seen to over-promise: a profile predicted
at ``P`` and measured at ``M < target`` asks the table for ``target * P / M``. That is above
``P`` (the table's figure for the profile just measured), so every re-aim chooses a new one.
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
    """The profile whose measured speedup meets ``target`` within ``tolerance`` (relative),
    and every attempt made.

    ``solve(aim)`` is the profile for speedup ``aim`` by the table (``None`` when the table
    cannot reach it), ``predict(levels)`` the table's speedup for a profile and ``measure`` the
    measured one; ``first`` is the profile already chosen for ``target`` (solved otherwise).
    After a shortfall, the next aim is ``target * predicted / measured`` of the last profile.
    It stops at the first profile that meets the target, after ``rounds`` re-aims, or when the
    table cannot reach the next aim; it returns the attempt that came closest to the target
    from below or met it at the lowest aim."""
    if rounds < 0:
        raise PruneflowError(f"verify rounds must be >= 0, got {rounds}")
    if not 0.0 <= tolerance < 1.0:
        raise PruneflowError(f"verify tolerance must be in [0, 1), got {tolerance}")
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
        if attempt.measured >= target * (1.0 - tolerance) or len(tried) > rounds:
            break
        aim = target * attempt.predicted / attempt.measured
        nxt = solve(aim)
        if nxt is None or tuple(int(v) for v in nxt) == attempt.levels:
            break
        levels = nxt
    best = max(tried, key=lambda a: (min(a.measured, target), -a.aim))
    return best, tried
