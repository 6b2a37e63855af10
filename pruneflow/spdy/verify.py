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
``P``, so the next one prunes less. The table is not equally wrong about every profile (its
sparsest entries are the ones a host's load moves most), so once one attempt measured short
of the target and another past it, the next aim is read off the line through those two in
(log predicted, log measured), the closest on either side: a secant step inside the bracket.
Measured on mlp1024 at 10x, the ratio rule alone went 12.26x (predicted 10.08x), then 9.00x
(8.24x), then 11.74x (9.20x): each re-aim corrected by the last profile's error, which was
another profile's. Of the attempts that meet the target (measured at least ``target x (1 -
tolerance)``), the one measured slowest is kept: the least pruning that measurably meets it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pruneflow.errors import PruneflowError

__all__ = ["Attempt", "meet_measured_target", "meet_measured_targets"]


@dataclass(frozen=True)
class Attempt:
    """One solve-and-measure round: the target the DP aimed at, its profile, the table's
    speedup for it and the measured one."""

    aim: float
    levels: tuple[int, ...]
    predicted: float
    measured: float


Levels = Sequence[int]


@dataclass
class _Chase:
    solve: Callable[[float], Levels | None]
    levels: Levels
    aim: float
    tried: list[Attempt]
    done: bool = False


def meet_measured_targets(
    target: float,
    rules: Mapping[str, tuple[Callable[[float], Levels | None], Levels | None]],
    predict: Callable[[Levels], float],
    measure: Callable[[list[Levels]], list[float]],
    *,
    rounds: int,
    tolerance: float,
) -> dict[str, tuple[Attempt, list[Attempt]]]:
    """Per rule, the profile kept for ``target`` and every attempt made (module docstring).

    ``rules``: name -> (``solve``, ``first``): ``solve(aim)`` is the profile the rule chooses
    for speedup ``aim`` by the table (``None`` when the table cannot reach it), ``first`` the
    profile it already chose for ``target`` (solved otherwise). ``predict(levels)`` is the
    table's speedup of a profile; ``measure(profiles)`` measures several together (in the same
    passes, so the host's drift moves them alike). Each round measures every rule still
    chasing its target. A rule stops at its first profile measured within ``target x (1 -/+
    tolerance)``, after ``rounds`` re-aims, or when its next aim is out of the table's reach or
    brings back a profile already measured. Kept: the slowest attempt that meets ``target x
    (1 - tolerance)``; if none does, the fastest."""
    if rounds < 0:
        raise PruneflowError(f"verify rounds must be >= 0, got {rounds}")
    if not 0.0 <= tolerance < 1.0:
        raise PruneflowError(f"verify tolerance must be in [0, 1), got {tolerance}")
    low, high = target * (1.0 - tolerance), target * (1.0 + tolerance)
    chases: dict[str, _Chase] = {}
    for name, (solve, first) in rules.items():
        levels = first if first is not None else solve(target)
        if levels is None:
            raise PruneflowError(f"target speedup {target:g}x is unreachable on the timing table")
        chases[name] = _Chase(solve, levels, float(target), [])
    while pending := [c for c in chases.values() if not c.done]:
        for c, measured in zip(pending, measure([c.levels for c in pending]), strict=True):
            key = tuple(int(v) for v in c.levels)
            c.tried.append(Attempt(c.aim, key, float(predict(c.levels)), float(measured)))
            last = c.tried[-1]
            if low <= last.measured <= high or len(c.tried) > rounds:
                c.done = True
                continue
            c.aim = _next_aim(c.tried, target)
            nxt = c.solve(c.aim)
            if nxt is None or tuple(int(v) for v in nxt) in {a.levels for a in c.tried}:
                c.done = True
            else:
                c.levels = nxt
    return {name: (_kept(c.tried, low), c.tried) for name, c in chases.items()}


def _next_aim(tried: list[Attempt], target: float) -> float:
    """The table speedup to ask for next: a secant step between the closest attempts measured
    short of and past ``target`` when there are both (and the faster one was predicted faster),
    else ``target`` times what the last attempt's prediction over-promised."""
    short = [a for a in tried if a.measured < target]
    past = [a for a in tried if a.measured > target]
    if short and past:
        lo = max(short, key=lambda a: a.measured)
        hi = min(past, key=lambda a: a.measured)
        if lo.predicted < hi.predicted:
            share = math.log(target / lo.measured) / math.log(hi.measured / lo.measured)
            return lo.predicted * (hi.predicted / lo.predicted) ** share
    last = tried[-1]
    return target * last.predicted / last.measured


def _kept(tried: list[Attempt], low: float) -> Attempt:
    meeting = [a for a in tried if a.measured >= low]
    if meeting:
        return min(meeting, key=lambda a: a.measured)
    return max(tried, key=lambda a: a.measured)


def meet_measured_target(
    target: float,
    solve: Callable[[float], Levels | None],
    predict: Callable[[Levels], float],
    measure: Callable[[Levels], float],
    *,
    rounds: int,
    tolerance: float,
    first: Levels | None = None,
) -> tuple[Attempt, list[Attempt]]:
    """:func:`meet_measured_targets` for one rule, measured alone."""
    return meet_measured_targets(
        target,
        {"": (solve, first)},
        predict,
        lambda many: [measure(levels) for levels in many],
        rounds=rounds,
        tolerance=tolerance,
    )[""]
