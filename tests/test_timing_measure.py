"""Interleaved timing and speedups spread over passes: who runs when, and bad input."""

from __future__ import annotations

import importlib
import itertools
import time

import pytest

from pruneflow.errors import PruneflowError
from pruneflow.timing import measure_interleaved, measure_speedups


def test_measure_interleaved_alternates_in_blocks() -> None:
    calls: list[str] = []
    timings = measure_interleaved(
        [lambda: calls.append("a"), lambda: calls.append("b")], warmup=1, repeats=8, block=4
    )
    assert [t.repeats for t in timings] == [9, 9]  # 3 timed per block of 4, until >= 8
    # warm-up once each, then blocks of four runs: the first of each block is untimed
    assert calls[:2] == ["a", "b"]
    assert calls[2:10] == ["a"] * 4 + ["b"] * 4


def test_measure_speedups_spreads_every_candidate_over_all_passes(monkeypatch) -> None:
    log: list[str] = []
    now = [0]  # a fake clock: each call costs exactly its work, whatever the host's load
    module = importlib.import_module(
        "pruneflow.timing.measure"
    )  # the package's `measure` is a function
    monkeypatch.setattr(module, "clock_ns", lambda: lambda: now[0])

    def run(name: str, work: int):  # noqa: ANN202
        def fn() -> None:
            log.append(name)
            now[0] += work

        return fn

    speedups = measure_speedups(
        run("ref", 20_000), [run("x", 2_000), run("y", 20_000)], repeats=20, passes=4
    )
    # each pass times the reference against every candidate in turn: x and y alternate
    # through the whole measurement instead of one finishing before the other starts
    order = [n for n in log if n != "ref"]
    switches = sum(a != b for a, b in zip(order, order[1:], strict=False))
    assert switches >= 2 * 4 - 1
    assert log.count("x") >= 20 and log.count("y") >= 20
    # the speedup is the reference's time over the candidate's: ten times less work, 10x
    assert speedups == pytest.approx([10.0, 1.0])


def test_a_fast_model_gets_blocks_of_at_least_min_block_seconds() -> None:
    calls = {"ref": 0, "fast": 0}

    def ref() -> None:
        calls["ref"] += 1
        time.sleep(0.004)

    def fast() -> None:
        calls["fast"] += 1

    measure_speedups(ref, [fast], repeats=4, passes=2, warmup=1, min_block_seconds=0.02)
    # ref: 2 passes x (1 warm-up + max(2, 0.02 / ~0.004 s) timed); a no-op is far faster than
    # 0.02 s per run, so its blocks grow far beyond its share of 2
    assert 2 * (1 + 2) <= calls["ref"] <= 2 * (1 + 6)
    assert calls["fast"] > 100
    calls.update(ref=0, fast=0)
    measure_speedups(ref, [fast], repeats=4, passes=2, warmup=1)  # default: the share alone
    assert calls == {"ref": 2 * 3, "fast": 2 * 3}


def test_measure_speedups_rejects_more_passes_than_repeats() -> None:
    with pytest.raises(PruneflowError, match="passes <= repeats"):
        measure_speedups(lambda: None, [lambda: None], repeats=3, passes=4)


def test_measure_speedups_at_a_low_quantile_see_the_undisturbed_runs() -> None:
    runs = itertools.count()

    def ref() -> None:
        sum(range(20_000))

    def sometimes_slowed() -> None:
        # one run in three undisturbed (2k), the others slowed to twice the reference's work
        sum(range(2_000 if next(runs) % 3 == 0 else 40_000))

    median = measure_speedups(ref, [sometimes_slowed], repeats=30, passes=3)[0]
    low = measure_speedups(ref, [sometimes_slowed], repeats=30, passes=3, quantile=0.1)[0]
    assert median < 1.0 < 2.0 < low
    with pytest.raises(PruneflowError, match=r"quantile must be in \(0, 1\)"):
        measure_speedups(ref, [ref], repeats=2, passes=1, quantile=1.0)
