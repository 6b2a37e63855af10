"""Profiler and timing table: schema, accounting, metadata checks and clear errors."""

from __future__ import annotations

import functools
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.io import write_parquet
from pruneflow.models import build
from pruneflow.models.zoo import prunable_layers
from pruneflow.timing import (
    COLUMNS,
    ProfileSettings,
    SparseRuntime,
    exact_mask,
    host_description,
    measure,
    predict_ms,
    profile_model,
    profiler,
    progress_calls,
    read_timing_table,
    thread_scope,
    time_matrix,
    write_timing_table,
)
from pruneflow.timing.measure import Timing
from pruneflow.timing.profiler import (
    _dense_reference,
    _dense_sweep_before,
    _fastest,
    _smooth,
    _sweep_plan,
)

LEVELS = (0.0, 0.5, 0.9)
QUICK = dict(levels=LEVELS, batch_size=8, warmup=0, min_repeats=2, max_repeats=3, max_seconds=0.05)


def _profile_lenet(progress=None, **change) -> tuple[pd.DataFrame, dict]:  # noqa: ANN001
    """lenet300100 on 1x8x8 (64-300-100-10) with QUICK settings and ``change``."""
    model = build("lenet300100", 10, (1, 8, 8))
    settings = ProfileSettings(**{**QUICK, **change})
    return profile_model(
        model, "lenet300100", in_shape=(1, 8, 8), settings=settings, progress=progress
    )


@functools.cache
def _profiled() -> tuple[pd.DataFrame, dict]:
    """fc1 and fc3 skipped, fc2 profiled."""
    torch.manual_seed(0)
    seen: list[tuple] = []
    floored: list[bool] = []
    real = profiler._add_context

    def add_context(rows, effects, dense_excess):  # noqa: ANN001, ANN202
        # whether the dense entry would have gone below a tenth of its time (then held there)
        dense = next(r["time_ms"] for r in rows if r["level"] == 0)
        floored.append(dense + float(effects["fc2"][0]) + dense_excess < 0.1 * dense)
        real(rows, effects, dense_excess)

    profiler._add_context = add_context
    try:
        table, meta = _profile_lenet(progress=lambda *a: seen.append(a))
    finally:
        profiler._add_context = real
    meta["_progress_calls"] = len(seen)
    meta["_dense_floored"] = floored == [True]
    return table, meta


def test_table_schema_and_rows() -> None:
    table, meta = _profiled()
    assert list(table.columns) == list(COLUMNS)
    assert meta["layers"] == ["fc2"] and meta["skipped_layers"] == ["fc1", "fc3"]
    assert meta["all_layers"] == ["fc1", "fc2", "fc3"]
    assert len(table) == 1 * len(LEVELS)
    # once per layer and sweep: the dense sweep, then every level in each round
    assert meta["_progress_calls"] == progress_calls(1, len(LEVELS), 2) == 1 + 2 * 3
    assert meta["rounds"] == 2
    assert list(table["level"]) == [0, 1, 2]
    assert list(table["sparsity"]) == list(LEVELS)
    assert set(table["layer_index"]) == {1} and set(table["op"]) == {"linear"}
    assert set(table["backend"]) <= {"dense", "csr", "csr_numba"}
    assert table.loc[0, "backend"] == "dense"
    assert (table["threads"] == 1).all() and (table["batch_size"] == 8).all()
    assert (table["device"] == "cpu").all()
    assert (table["time_ms"] > 0).all() and (table["repeats"] >= 1).all()
    assert (table["time_ms_p10"] <= table["time_ms"]).all()
    assert (table["time_ms"] <= table["time_ms_p90"]).all()
    assert meta["outside_ms"] > 0.0
    # the dense model adds up as measured; the remainder is the time outside the layers, unless
    # the dense entry was held at its floor (then the remainder gives up what it holds)
    dense = table.loc[0, "time_ms"]
    assert meta["remainder_ms"] + dense == pytest.approx(meta["dense_total_ms"])
    if meta["_dense_floored"]:
        assert meta["remainder_ms"] < meta["outside_ms"]
    else:
        assert meta["remainder_ms"] == pytest.approx(meta["outside_ms"])
    assert list(meta["context_ms"]) == ["fc2"] and len(meta["context_ms"]["fc2"]) == len(LEVELS)
    # a round of two levels is shorter than _DENSE_EVERY: a dense sweep starts every round,
    # and one ends the run
    assert len(meta["dense_sweep_totals_ms"]) == 2 + 1


def test_sparse_times_are_smoothed_and_the_measurements_kept() -> None:
    table, meta = _profiled()
    assert meta["smooth_window"] == 5
    measured = meta["measured_time_ms"]["fc2"]
    assert len(measured) == len(LEVELS)
    assert table.loc[0, "time_ms"] == pytest.approx(measured[0])  # dense: as measured
    sparse = table.loc[table["level"] > 0, "time_ms"].to_numpy()
    assert np.all(np.diff(sparse) <= 1e-12)
    assert sum(sparse) == pytest.approx(sum(measured[1:]))  # pooled, not shifted


def test_smoothing_moves_p10_p90_with_the_median() -> None:
    rows = [
        {"layer": "a", "level": li, "time_ms": t, "time_ms_p10": 0.9 * t, "time_ms_p90": 1.2 * t}
        for li, t in enumerate([5.0, 2.0, 3.0, 1.0])
    ]
    _smooth(rows, [0.0, 0.5, 0.7, 0.9], 1)
    assert [r["time_ms"] for r in rows] == [5.0, 2.0, 3.0, 1.0]  # window 1 keeps the medians
    _smooth(rows, [0.0, 0.5, 0.7, 0.9], 2)
    t = [r["time_ms"] for r in rows]
    assert t[0] == 5.0 and t[1] >= t[2] >= t[3]
    for r in rows:
        assert r["time_ms_p10"] == pytest.approx(0.9 * r["time_ms"])
        assert r["time_ms_p90"] == pytest.approx(1.2 * r["time_ms"])


def test_remainder_accounting_and_host() -> None:
    table, meta = _profiled()
    dense_fc2 = float(table.loc[table["level"] == 0, "time_ms"].iloc[0])
    assert meta["prunable_dense_ms"] == pytest.approx(dense_fc2)
    # skipped first/last layers belong to the remainder, not to the prunable part
    assert meta["remainder_ms"] == pytest.approx(meta["dense_total_ms"] - dense_fc2)
    assert meta["bn_folded"] is True and meta["fused_relu"] == ["fc1", "fc2"]
    host = meta["host"]
    assert host["threads"] == 1 and host["torch"] == torch.__version__ and host["cpu"]
    assert meta["levels"] == list(LEVELS) and meta["batch_size"] == 8


def test_write_read_roundtrip(tmp_path: Path) -> None:
    table, meta = _profiled()
    path = write_timing_table(tmp_path / "t.parquet", table, meta)
    back, meta2 = read_timing_table(path, "lenet300100", ["fc2"], host=host_description(1))
    pd.testing.assert_frame_equal(back, table.reset_index(drop=True))
    assert meta2["remainder_ms"] == pytest.approx(meta["remainder_ms"])
    # the full prunable-layer list is accepted too
    read_timing_table(path, "lenet300100", ["fc1", "fc2", "fc3"])
    assert time_matrix(back).shape == (1, len(LEVELS))
    assert predict_ms(back, meta2, {"fc2": 0}) == pytest.approx(meta["dense_total_ms"])


def test_reader_refuses_other_model_layers_or_host(tmp_path: Path) -> None:
    table, meta = _profiled()
    path = write_timing_table(tmp_path / "t.parquet", table, meta)
    with pytest.raises(PruneflowError, match="measured for model 'lenet300100', not 'mlp1024'"):
        read_timing_table(path, "mlp1024", ["fc2"])
    with pytest.raises(PruneflowError, match="layer list differs"):
        read_timing_table(path, "lenet300100", ["fc1", "fc2"])
    with pytest.raises(PruneflowError, match="another host.*threads"):
        read_timing_table(path, "lenet300100", ["fc2"], host=host_description(2))
    with pytest.raises(PruneflowError, match="another host.*cpu"):
        read_timing_table(path, "lenet300100", ["fc2"], host={"cpu": "Some Other CPU"})
    with pytest.raises(PruneflowError, match="missing Parquet"):
        read_timing_table(tmp_path / "none.parquet", "lenet300100", ["fc2"])
    write_parquet(tmp_path / "plain.parquet", table, {"format": "something else"})
    with pytest.raises(PruneflowError, match="not a pruneflow timing table"):
        read_timing_table(tmp_path / "plain.parquet", "lenet300100", ["fc2"])


def test_writer_and_reader_validate_content(tmp_path: Path) -> None:
    table, meta = _profiled()
    with pytest.raises(PruneflowError, match="lacks columns: repeats"):
        write_timing_table(tmp_path / "a.parquet", table.drop(columns=["repeats"]), meta)
    bad = table.copy()
    bad.loc[2, "level"] = 7
    with pytest.raises(PruneflowError, match="level 7 out of range 0..2"):
        write_timing_table(tmp_path / "b.parquet", bad, meta)
    with pytest.raises(PruneflowError, match="lacks metadata: remainder_ms"):
        write_timing_table(
            tmp_path / "c.parquet", table, {k: v for k, v in meta.items() if k != "remainder_ms"}
        )
    with pytest.raises(PruneflowError, match="one row per layer and level"):
        write_timing_table(tmp_path / "d.parquet", table.iloc[:2], meta)
    # a file written behind the writer's back is checked on read as well
    write_parquet(tmp_path / "e.parquet", bad, meta)
    with pytest.raises(PruneflowError, match="out of range"):
        read_timing_table(tmp_path / "e.parquet", "lenet300100", ["fc2"])
    assert not (tmp_path / "a.parquet").exists()


def test_predict_errors() -> None:
    table, meta = _profiled()
    with pytest.raises(PruneflowError, match="level 3 of 'fc2' out of range 0..2"):
        predict_ms(table, meta, {"fc2": 3})
    with pytest.raises(PruneflowError, match="missing \\['fc2'\\]"):
        predict_ms(table, meta, {})
    with pytest.raises(PruneflowError, match="integer index"):
        predict_ms(table, meta, {"fc2": 0.5})
    assert predict_ms(table, meta, {"fc2": 2}) > meta["remainder_ms"]


def test_profiler_errors() -> None:
    model = build("lenet300100", 10, (1, 8, 8))
    with pytest.raises(PruneflowError, match="no prunable"):
        profile_model(nn.Sequential(nn.ReLU()), "x", in_shape=(1, 2, 2))
    with pytest.raises(PruneflowError, match="no prunable layers left"):
        profile_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "tiny", in_shape=(1, 2, 2))
    for levels, match in [
        ((0.0, 1.0), "out of range"),
        ((0.0, -0.1), "out of range"),
        ((0.5, 0.9), "start with the dense level"),
        ((0.0, 0.9, 0.5), "strictly increasing"),
    ]:
        with pytest.raises(PruneflowError, match=match):
            profile_model(
                model, "lenet300100", in_shape=(1, 8, 8), settings=ProfileSettings(levels=levels)
            )
    with pytest.raises(PruneflowError, match="unknown backend"):
        profile_model(
            model,
            "lenet300100",
            in_shape=(1, 8, 8),
            settings=ProfileSettings(backends=("dense", "gpu_magic")),
        )
    with pytest.raises(PruneflowError, match="has 2 samples, the profile needs 8"):
        profile_model(
            model,
            "lenet300100",
            calib=torch.randn(2, 1, 8, 8),
            settings=ProfileSettings(batch_size=8),
        )
    with pytest.raises(PruneflowError, match="batch_size"):
        profile_model(
            model, "lenet300100", in_shape=(1, 8, 8), settings=ProfileSettings(batch_size=0)
        )
    with pytest.raises(PruneflowError, match="threads"):
        with thread_scope(0):
            pass
    with pytest.raises(PruneflowError, match="exceeds numba's pool"):
        with thread_scope(10_000):
            pass


def test_exact_mask_and_measure() -> None:
    mask = exact_mask(torch.Size([10, 30]), 0.9, np.random.default_rng(0))
    assert int((mask == 0).sum()) == 270 and mask.shape == (10, 30)
    t = measure(lambda: sum(range(1000)), warmup=1, min_repeats=3, max_repeats=5)
    assert 3 <= t.repeats <= 5 and 0 < t.p10_ms <= t.median_ms <= t.p90_ms
    slow = measure(lambda: sum(range(100_000)), min_repeats=3, give_up_above_ms=1e-6)
    assert slow.repeats == 1


def test_profile_of_default_layers_matches_zoo() -> None:
    model = build("smallcnn", 10, (1, 8, 8))
    names = prunable_layers(model)
    assert names[0] == "conv1.0" and names[-1] == "fc2"


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_profile_with_two_threads() -> None:
    torch.manual_seed(0)
    model = build("lenet300100", 10, (1, 8, 8))
    settings = ProfileSettings(**{**QUICK, "levels": (0.0, 0.9)}, threads=2)
    before = (torch.get_num_threads(), numba.get_num_threads())
    with thread_scope(1):
        table, meta = profile_model(model, "lenet300100", in_shape=(1, 8, 8), settings=settings)
        assert (torch.get_num_threads(), numba.get_num_threads()) == (1, 1)  # restored
    assert (table["threads"] == 2).all() and meta["host"]["threads"] == 2
    assert (torch.get_num_threads(), numba.get_num_threads()) == before


class _Shared(nn.Module):
    """A layer called twice per forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(8, 32), nn.Linear(32, 32), nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x.flatten(1)))
        return self.out(self.mid(torch.relu(self.mid(h))))


def test_profile_of_a_layer_called_twice() -> None:
    torch.manual_seed(0)
    model = _Shared()
    table, meta = profile_model(
        model, "shared", in_shape=(2, 2, 2), settings=ProfileSettings(**QUICK)
    )
    assert meta["layers"] == ["mid"] and len(table) == len(LEVELS)
    x = torch.randn(4, 2, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(SparseRuntime(model, "csr_numba")(x), model(x))


def test_sweep_plan_visits_every_level_once_per_round_in_new_orders() -> None:
    layers = ["a", "b", "c"]
    plan = _sweep_plan(layers, 42, rounds=3, seed=0)
    assert len(plan) == 3 * 42 and plan == _sweep_plan(layers, 42, rounds=3, seed=0)
    orders = []
    for r in range(3):
        sweeps = [assign for rnd, assign in plan if rnd == r]
        for n in layers:  # every level once per layer and round, the dense one included
            assert sorted(a[n] for a in sweeps) == list(range(42))
        orders.append([a["a"] for a in sweeps])
        # each layer in its own order: its neighbours sit at other levels (in situ, mixed)
        assert [a["a"] for a in sweeps] != [a["b"] for a in sweeps]
        assert sum(len(set(a.values())) == 1 for a in sweeps) < 5
    # the point of rounds: a level is timed at other moments, its neighbours at others again
    assert orders[0] != orders[1] != orders[2] and orders[0] != sorted(orders[0])
    assert _sweep_plan(layers, 42, rounds=3, seed=1) != plan


def _t(ms: float) -> Timing:
    return Timing.of([0.9 * ms, ms, ms, ms, 1.1 * ms])


def test_fastest_backend_pools_the_rounds_runs() -> None:
    dense = _t(10.0)
    # csr given up on in two of three rounds: one lucky round does not make it the choice
    rounds = [
        {"csr_numba": _t(4.0), "csr": _t(3.0)},
        {"csr_numba": _t(5.0)},
        {"csr_numba": _t(6.0)},
    ]
    backend, t = _fastest(rounds, dense)
    assert backend == "csr_numba" and t.median_ms == 5.0 and t.repeats == 15
    assert sorted(t.samples_ms) == sorted(v for r in rounds for v in r["csr_numba"].samples_ms)
    # nothing beats dense: dense, with the dense timing
    assert _fastest([{"csr": _t(12.0)}, {"csr": _t(11.0)}], dense) == ("dense", dense)
    assert _fastest([{}, {}], dense) == ("dense", dense)


def test_fastest_backend_by_the_quantile_asked_for() -> None:
    dense = _t(10.0)
    # csr: fast when undisturbed (a fifth of its runs), slow in its median; csr_numba: steady
    bimodal = Timing.of([2.0, 2.0] + [8.0] * 8)
    steady = Timing.of([5.0] * 10)
    rounds = [{"csr": bimodal, "csr_numba": steady}] * 2
    assert _fastest(rounds, dense)[0] == "csr_numba"
    backend, t = _fastest(rounds, dense, quantile=0.1)
    assert backend == "csr" and t.quantile(0.1) == pytest.approx(2.0)


def test_dense_reference_pools_every_dense_sweep() -> None:
    class _S:
        def __init__(self, ms: float) -> None:
            self.plain_total = _t(ms)
            self.layers = {"fc1": _t(ms / 2)}

    sweeps = [_S(v) for v in (30.0, 20.0, 25.0, 21.0)]
    total, layers = _dense_reference(sweeps)  # type: ignore[arg-type]
    assert total.repeats == 20 and total.median_ms == pytest.approx(22.8)  # all 20 runs
    assert total.quantile(0.1) < 20.0
    assert list(layers) == ["fc1"] and layers["fc1"].repeats == 20


def test_dense_sweeps_are_spread_over_the_whole_run() -> None:
    # 40 sparse levels x 2 rounds: after every 8th sparse sweep, plus the first and the last
    before = [j for j in range(80) if _dense_sweep_before(j, 40)]
    assert before == list(range(8, 80, 8)) and len(before) + 2 == 11
    # short rounds: every round's start
    assert [j for j in range(6) if _dense_sweep_before(j, 3)] == [3]


def test_profile_rounds_must_be_positive() -> None:
    with pytest.raises(PruneflowError, match="rounds must be an integer >= 1"):
        _profile_lenet(rounds=0)


def test_min_seconds_adds_whole_rounds_up_to_the_cap() -> None:
    seen: list[tuple] = []
    # a minimum no host reaches in 4 rounds: the cap decides (0.3 s did not on a loaded host)
    _, meta = _profile_lenet(progress=lambda *a: seen.append(a), min_seconds=1e6, max_rounds=4)
    assert meta["rounds"] == 4
    assert len(seen) == progress_calls(1, len(LEVELS), 4)  # every level in every round
    # no minimum: the rounds asked for, however fast
    _, meta = _profile_lenet(rounds=3, min_seconds=0.0, max_rounds=4)
    assert meta["rounds"] == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rounds": 3, "max_rounds": 2}, r"max_rounds \(2\) must be >= rounds \(3\)"),
        ({"min_seconds": -1.0}, "min_seconds must be >= 0"),
    ],
)
def test_round_settings_are_checked(change: dict, message: str) -> None:
    with pytest.raises(PruneflowError, match=message):
        _profile_lenet(**change)


def test_profile_smooth_window_must_be_positive() -> None:
    with pytest.raises(PruneflowError, match="smooth_window must be an integer >= 1"):
        _profile_lenet(smooth_window=0)


def test_sparse_entries_are_their_sweeps_runs_pooled_unscaled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # each (level, backend) entry is the quantile of the runs of its sweeps in every round,
    # as timed (plus its level's context effect): no per-sweep correction
    swept: dict[int, list[dict[str, Timing]]] = {}
    real = profiler._sparse_sweep

    def spy(ctx, rnd, assign):  # noqa: ANN001, ANN202
        found, outside = real(ctx, rnd, assign)
        swept.setdefault(assign["fc2"], []).append(found["fc2"])
        return found, outside

    monkeypatch.setattr(profiler, "_sparse_sweep", spy)
    table, meta = _profile_lenet(rounds=3, quantile=0.25, smooth_window=1)
    assert {li: len(v) for li, v in swept.items()} == {0: 3, 1: 3, 2: 3}
    measured = meta["measured_time_ms"]["fc2"]
    effect = meta["context_ms"]["fc2"]
    dense = Timing.pooled([f["dense"] for f in swept[0]]).quantile(0.25)
    # level 0: the dense time among the sweeps, plus what makes the dense model add up
    excess = meta["dense_total_ms"] - meta["outside_ms"] - dense - effect[0]
    assert measured[0] == pytest.approx(max(dense + effect[0] + excess, 0.1 * dense))
    for li in (1, 2):
        backend = table.loc[li, "backend"]
        if backend == "dense":  # the level's dense time: level 0's
            raw = dense
        else:
            # the rounds that kept this backend (one may give up on it in a slow round)
            kept = [f[backend] for f in swept[li] if backend in f]
            assert 2 * len(kept) > len(swept[li])
            raw = Timing.pooled(kept).quantile(0.25)
        assert measured[li] == pytest.approx(max(raw + effect[li], 0.1 * raw))


def test_layers_are_timed_beside_neighbours_at_other_levels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # in one sweep a layer may be dense while its neighbour is sparse: each entry is timed in
    # the contexts a pruned model gives it, and what its level does to the layers after it is
    # in its entry (meta context_ms)
    swept: list[tuple[dict[str, int], dict[str, set[str]]]] = []
    real = profiler._sparse_sweep

    def spy(ctx, rnd, assign):  # noqa: ANN001, ANN202
        found, outside = real(ctx, rnd, assign)
        swept.append((dict(assign), {n: set(f) for n, f in found.items()}))
        return found, outside

    monkeypatch.setattr(profiler, "_sparse_sweep", spy)
    table, meta = _profile_lenet(skip_first_last=False, rounds=2, backends=("dense", "csr_numba"))
    assert meta["layers"] == ["fc1", "fc2", "fc3"] and len(swept) == 2 * len(LEVELS)
    assert any(len(set(a.values())) > 1 for a, _ in swept)
    for assign, found in swept:
        for n, li in assign.items():
            if li == 0:  # timed as the dense layer, in whatever the others run
                assert found[n] == {"dense"}
            else:
                assert "dense" not in found[n]
    assert sorted(meta["context_ms"]) == ["fc1", "fc2", "fc3"]
    assert all(len(v) == len(LEVELS) for v in meta["context_ms"].values())
    # the dense model still adds up as measured
    dense = table.loc[table["level"] == 0, "time_ms"].sum()
    assert meta["remainder_ms"] + dense == pytest.approx(meta["dense_total_ms"])
