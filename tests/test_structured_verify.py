"""Re-aiming a width profile on its measured speedup (pruneflow.structured.verify) and the
baselines' bisection keeping a budget that meets the target."""

import numpy as np
import pandas as pd
import pytest

from pruneflow.errors import PruneflowError
from pruneflow.structured.baselines import calibrate, uniform_level
from pruneflow.structured.search import budget
from pruneflow.structured.timing import StructuredTable
from pruneflow.structured.verify import (
    attempt_rows,
    check_floor,
    meet_target,
    search_rule,
    uniform_rule,
)

BASE = (2.0, 3.0, 4.0)  # dense ms per group
LEVELS = 6


def _table() -> StructuredTable:
    """Three groups whose time falls with their own level and (a little) the previous one's."""
    rows = []
    for g, base in enumerate(BASE):
        for p in range(LEVELS):
            for s in range(LEVELS):
                time = base * (1.0 - 0.15 * s) * (1.0 - 0.02 * p * (g > 0))
                rows.append(
                    {
                        "group_index": g,
                        "prev_level": p,
                        "level": s,
                        "time_ms": time,
                        "channels": 16 - 2 * s,
                    }
                )
    meta = {
        "model": "toy",
        "groups": ["a", "b", "c"],
        "levels": list(range(LEVELS)),
        "dense_total_ms": sum(BASE) + 1.0,
        "remainder_ms": 1.0,
        "prunable_dense_ms": sum(BASE),
    }
    return StructuredTable(pd.DataFrame(rows), meta)


def _predict(table, levels):
    return table.dense_total_ms / table.predict_ms(list(levels))


def test_search_profile_measured_short_is_re_aimed_until_it_meets_the_target():
    table = _table()
    sens = np.array([0.2, 0.9, 0.5])
    solve = search_rule(table, sens, 2000)
    measured = []

    def measure(levels):  # the table promises 12% more than the model delivers
        measured.append(tuple(levels))
        return 0.88 * _predict(table, levels)

    kept, tried = meet_target(1.5, solve, table, measure, 3, 0.03)
    # aimed one tolerance above the target: the rule's own profile for 1.545x first
    assert tried[0].aim == pytest.approx(1.5 * 1.03)
    assert tried[0].levels == solve(1.5 * 1.03)
    assert tried[0].predicted >= 1.545 * (1 - 1e-9)
    assert tried[0].measured < 0.95 * 1.5  # without the re-aim it would miss the floor
    assert len(tried) >= 2
    assert tried[1].aim == pytest.approx(1.545 * tried[0].predicted / tried[0].measured)
    assert kept.measured >= 1.5 * (1 - 0.03**2) and kept in tried
    assert [a.levels for a in tried] == measured
    check_floor("toy", 1.5, kept, tried, 0.95, solve, table.max_speedup())  # no error
    rows = attempt_rows(1.5, "search", tried)
    assert [r["measured"] for r in rows] == [a.measured for a in tried]
    assert rows[0]["rule"] == "search" and rows[1]["aim"] > rows[0]["aim"]


def test_a_profile_past_the_target_is_re_aimed_to_prune_less():
    table = _table()
    solve = search_rule(table, np.array([0.2, 0.9, 0.5]), 2000)
    kept, tried = meet_target(1.3, solve, table, lambda lv: 1.25 * _predict(table, lv), 3, 0.03)
    assert tried[0].measured > 1.3 * 1.03**2
    assert tried[1].aim < tried[0].aim
    assert kept.measured >= 1.3 * (1 - 0.03**2)


def test_uniform_widths_are_re_aimed_one_level_at_a_time():
    table = _table()
    solve = uniform_rule(table)
    assert solve(1.45) == (uniform_level(table, 1.45),) * 3
    kept, tried = meet_target(1.45, solve, table, lambda lv: 0.8 * _predict(table, lv), 3, 0.03)
    assert tried[0].levels == solve(1.45 * 1.03) and tried[0].measured < 1.45
    assert len(set(kept.levels)) == 1
    assert kept.levels[0] > tried[0].levels[0] and kept.measured >= 1.45
    assert solve(table.max_speedup() * 2) is None


def test_a_target_unreachable_as_measured_is_one_line_naming_the_largest_speedup():
    table = _table()
    reach = table.max_speedup()
    solve = search_rule(table, np.array([0.2, 0.9, 0.5]), 2000)
    target = 0.95 * reach  # the table reaches it, the measured model never does
    kept, tried = meet_target(target, solve, table, lambda lv: 0.8 * _predict(table, lv), 3, 0.03)
    with pytest.raises(PruneflowError, match="unreachable as measured") as err:
        check_floor("toy", target, kept, tried, 0.95, solve, reach)
    message = str(err.value)
    assert "\n" not in message
    assert f"about {max(a.measured for a in tried):.3g}x" in message
    assert f"fastest predicts {reach:.3g}x" in message


def test_a_target_within_reach_but_out_of_rounds_says_so():
    table = _table()
    solve = search_rule(table, np.array([0.2, 0.9, 0.5]), 2000)
    kept, tried = meet_target(1.5, solve, table, lambda lv: 0.88 * _predict(table, lv), 0, 0.03)
    assert len(tried) == 1
    with pytest.raises(PruneflowError, match="structured.verify.rounds re-aims") as err:
        check_floor("toy", 1.5, kept, tried, 0.95, solve, table.max_speedup())
    assert "\n" not in str(err.value)


def test_search_rule_reproduces_the_budgeted_dp():
    table = _table()
    disc = budget(table, 1.5, 2000)
    levels = search_rule(table, np.array([0.2, 0.9, 0.5]), 2000)(1.5)
    prev = (0, *levels[:-1])
    spent = sum(int(disc.times[g, p, s]) for g, (p, s) in enumerate(zip(prev, levels, strict=True)))
    assert spent <= disc.budget


def test_calibrate_keeps_a_budget_that_meets_the_target_over_a_closer_one_short_of_it():
    # speedup 1 + 2b: bisection tries 0.5 (2.0x), 0.25 (1.5x), 0.375 (1.75x) for 1.6x
    found = calibrate(lambda b: b, lambda m: 1.0 + 2.0 * m, 1.6, 0.0, 1.0, 3, True, floor=0.97)
    assert [round(s, 3) for _, s in found.tried] == [2.0, 1.5, 1.75]
    assert found.measured_speedup == pytest.approx(1.75)
    # without a floor: the closest, 6% short of the target
    found = calibrate(lambda b: b, lambda m: 1.0 + 2.0 * m, 1.6, 0.0, 1.0, 3, True)
    assert found.measured_speedup == pytest.approx(1.5)
    # nothing meets it: the fastest
    found = calibrate(lambda b: b, lambda m: 1.0 + 0.2 * m, 1.6, 0.0, 1.0, 3, True, floor=0.97)
    assert found.measured_speedup == pytest.approx(max(s for _, s in found.tried))
