"""Context effects: what a layer's level does to the rest of the forward pass."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pruneflow.timing.context import SweepRecord, context_effects

LAYERS = ["a", "b", "c"]
# each layer's own time per level (the table entry before its effect)
OWN = {"a": [4.0, 1.0], "b": [3.0, 0.5], "c": [2.0, 0.4]}


def _true_total(levels: dict[str, int]) -> float:
    """A forward pass whose parts depend on other layers' levels: the ops outside the layers
    run slower after a dense c (it evicts them), and b runs slower after a dense a."""
    outside = 1.0 + 0.6 * (levels["c"] == 0) + 0.1 * (levels["a"] == 0)
    b_slowdown = 0.3 * (levels["a"] == 0)
    return outside + sum(OWN[n][levels[n]] for n in LAYERS) + b_slowdown


def _records() -> list[SweepRecord]:
    """Every combination of levels once (a balanced design), with a drift per sweep that
    slows every part of it alike (the host's speed, independent of the levels)."""
    out = []
    for combo in itertools.product(range(2), repeat=3):
        lv = dict(zip(LAYERS, combo, strict=True))
        f = 1.0 + 0.03 * (-1) ** sum(combo)
        layer_ms = {n: f * OWN[n][lv[n]] for n in LAYERS}
        layer_ms["b"] += f * 0.3 * (lv["a"] == 0)
        outside = f * (1.0 + 0.6 * (lv["c"] == 0) + 0.1 * (lv["a"] == 0))
        out.append(SweepRecord(lv, layer_ms, outside))
    return out


def _entries(records: list[SweepRecord]) -> dict[str, list[float]]:
    """Each layer's time per level over the sweeps, as the profiler pools them: b's entries
    carry the average slowdown of its context."""
    return {
        n: [
            float(np.mean([r.layer_ms[n] for r in records if r.levels[n] == li])) for li in range(2)
        ]
        for n in LAYERS
    }


def test_effects_land_on_the_layer_that_causes_them() -> None:
    effects = context_effects(_records(), _entries(_records()), LAYERS)
    # c dense slows the outside ops by 0.6 (centred: +-0.3); a dense slows b and the outside
    assert effects["c"][0] - effects["c"][1] == pytest.approx(0.6, abs=0.05)
    assert effects["a"][0] - effects["a"][1] == pytest.approx(0.4, abs=0.05)
    # b's level changes nothing after it (c's own time is its entry)
    assert abs(effects["b"][0] - effects["b"][1]) < 0.05
    for n in LAYERS:  # centred over a balanced design
        assert np.mean(effects[n]) == pytest.approx(0.0, abs=1e-9)


def test_the_additive_sum_with_effects_predicts_every_profile() -> None:
    records = _records()
    entries = _entries(records)
    effects = context_effects(records, entries, LAYERS)
    remainder = float(np.mean([r.outside_ms for r in records]))
    for combo in itertools.product(range(2), repeat=3):
        lv = dict(zip(LAYERS, combo, strict=True))
        predicted = remainder + sum(entries[n][lv[n]] + effects[n][lv[n]] for n in LAYERS)
        plain = remainder + sum(entries[n][lv[n]] for n in LAYERS)  # off by up to 0.5 ms
        assert predicted == pytest.approx(_true_total(lv), abs=0.01)
        if combo[0] == 0 and combo[2] == 0:
            assert abs(plain - _true_total(lv)) >= 0.45


def test_missing_times_and_unvisited_levels() -> None:
    # b never ran on its table backend: a's effect rests on the outside time alone (b's
    # residual counts as none)
    records = [
        SweepRecord({"a": 0, "b": 1}, {"a": 4.0, "b": None}, 2.0),
        SweepRecord({"a": 1, "b": 0}, {"a": 1.0, "b": None}, 1.0),
    ]
    entries = {"a": [4.0, 1.0, 0.5], "b": [3.0, 0.5, 0.2]}
    effects = context_effects(records, entries, ["a", "b"])
    assert list(effects["a"]) == pytest.approx([0.5, -0.5, 0.0])  # level 2: never visited
    # after b: the outside time and a's residual (0 in both sweeps)
    assert list(effects["b"]) == pytest.approx([-0.5, 0.5, 0.0])
    assert context_effects([], entries, ["a", "b"])["a"].tolist() == [0.0, 0.0, 0.0]


def test_a_single_layer_has_only_the_outside_after_it() -> None:
    records = [
        SweepRecord({"a": 0}, {"a": 9.0}, 2.0),  # its own residual (+5) is not an effect
        SweepRecord({"a": 1}, {"a": 1.0}, 1.0),
    ]
    effects = context_effects(records, {"a": [4.0, 1.0]}, ["a"])
    assert list(effects["a"]) == pytest.approx([0.5, -0.5])
