"""SPDY's steps on a tiny model: search per target -> profile.parquet/search.parquet, resume
after a crash mid-search, and the one-shot comparison against the baselines."""

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_params import SPDY

from pruneflow import layout
from pruneflow.checkpoint import load_checkpoint
from pruneflow.config import Params, scoped
from pruneflow.errors import PruneflowError
from pruneflow.io import parquet_metadata
from pruneflow.spdy.dp import discretize
from pruneflow.steps import spdy as spdy_step
from pruneflow.steps.data import PREPARE
from pruneflow.steps.dense import TRAIN_DENSE
from pruneflow.steps.recondb import RECONDB, RECONDB_LAYER
from pruneflow.steps.spdy import (
    ONESHOT_COLUMNS,
    SPDY_ONESHOT,
    SPDY_SEARCH,
    Problem,
    figure_files,
    oneshot_file,
    profile_file,
    profiles_file,
    search_file,
)
from pruneflow.steps.spdy_gmp import (
    RESULTS_COLUMNS,
    SPDY_GMP,
    SPDY_RESULTS,
    results_file,
    results_markdown,
    run_checkpoint,
)
from pruneflow.steps.timing import PROFILE


def _params(verify: dict | None = None, **search) -> Params:
    spdy = {**SPDY, "search": {**SPDY["search"], **search}}
    if verify is not None:
        spdy["verify"] = verify
    base = Params.model_validate({"runtime": {"threads": 1, "progress": "off"}, "spdy": spdy})
    return scoped(base, "spdy:lenet300100")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """prepare, train_dense, profile and the database, once for the module."""
    root = tmp_path_factory.mktemp("spdy")
    old, state = Path.cwd(), os.environ.get("PRUNEFLOW_STATE_DIR")
    os.chdir(root)
    os.environ["PRUNEFLOW_STATE_DIR"] = str(root / ".pruneflow")
    p = _params()
    for step in (PREPARE, TRAIN_DENSE, PROFILE):
        step.run(p)
    RECONDB_LAYER.run_all(p)
    RECONDB.run(p)
    os.chdir(old)
    if state is None:
        os.environ.pop("PRUNEFLOW_STATE_DIR")
    else:
        os.environ["PRUNEFLOW_STATE_DIR"] = state
    return root


@pytest.fixture()
def spdy_dir(built, tmp_path, monkeypatch):
    work = tmp_path / "w"
    shutil.copytree(built, work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("PRUNEFLOW_STATE_DIR", str(work / ".pruneflow"))
    return work


def test_search_writes_a_profile_within_budget_and_its_history(spdy_dir):
    p = _params()
    records = SPDY_SEARCH.run_all(p)
    assert [r["item"]["target"] for r in records] == [1.5, 2.0]
    problem = Problem(p)
    for target in (1.5, 2.0):
        prof = pd.read_parquet(profile_file(p, target))
        hist = pd.read_parquet(search_file(p, target))
        assert list(prof["layer"]) == ["fc1", "fc2", "fc3"]
        disc = problem.discretize(p, target)
        levels = prof["level"].to_numpy()
        assert int(disc.times[np.arange(3), levels].sum()) <= disc.budget
        assert disc.predicted_speedup(levels) >= target * 0.99
        assert list(hist["eval"]) == list(range(len(hist)))
        assert set(hist["phase"]) == {"random", "local"}
        assert (np.diff(hist["best"]) <= 0).all()
        meta = parquet_metadata(profile_file(p, target))
        assert meta["calib_loss"] == pytest.approx(hist["best"].iloc[-1])
        assert meta["profiles_scored"] == int(hist["new_profile"].sum())
    assert [r["status"] for r in SPDY_SEARCH.run_all(p)] == ["cached", "cached"]


def test_a_crash_mid_search_resumes_and_ends_with_the_same_profile(spdy_dir, monkeypatch):
    p = _params()
    item = {"target": 2.0}
    SPDY_SEARCH.run(p, item=item)
    expected = pd.read_parquet(search_file(p, 2.0))
    assert int(expected["new_profile"].sum()) >= 2
    shutil.rmtree(layout.spdy_dir(p))
    shutil.rmtree(spdy_dir / ".pruneflow" / "stepcache")

    import pruneflow.spdy.scoring as scoring

    real = scoring.CalibrationLoss.__call__
    calls = {"n": 0}

    def crash_on_2nd(self, levels):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        return real(self, levels)

    monkeypatch.setattr(scoring.CalibrationLoss, "__call__", crash_on_2nd)
    with pytest.raises(RuntimeError):
        SPDY_SEARCH.run(p, item=item)
    assert list((spdy_dir / ".pruneflow" / "spdy-search").glob("*.json"))
    monkeypatch.setattr(scoring.CalibrationLoss, "__call__", real)
    calls["n"] = 0
    counted = {"n": 0}

    def count(self, levels):
        counted["n"] += 1
        return real(self, levels)

    monkeypatch.setattr(scoring.CalibrationLoss, "__call__", count)
    SPDY_SEARCH.run(p, item=item)
    pd.testing.assert_frame_equal(pd.read_parquet(search_file(p, 2.0)), expected)
    assert counted["n"] == int(expected["new_profile"].sum()) - 1  # only what was not scored
    assert not list((spdy_dir / ".pruneflow" / "spdy-search").glob("*.json"))


def test_oneshot_compares_spdy_with_the_baselines_at_the_same_budget(spdy_dir):
    p = _params()
    SPDY_SEARCH.run_all(p)
    summary = SPDY_ONESHOT.run(p)["summary"]
    table = pd.read_parquet(oneshot_file(p))
    assert list(table.columns) == list(ONESHOT_COLUMNS)
    assert len(table) == 8 and set(table["profile"]) == {"spdy", "uniform", "gmp", "prior"}
    for target, part in table.groupby("target"):
        assert (part["predicted_speedup"] >= target * 0.99).all()
        # spdy.verify.rounds 0: chosen for the target itself, not measured
        assert (part["aim"] == target).all() and part["measured_speedup"].isna().all()
        spdy = part.set_index("profile").loc["spdy"]
        # re-stitched for the table, SPDY's profile scores exactly what the search measured
        history = pd.read_parquet(search_file(p, target))
        assert spdy["calib_loss"] == pytest.approx(history["calib_loss"].min(), rel=1e-12)
        assert spdy["profiles_scored"] == int(history["new_profile"].sum())
        assert 0.0 < spdy["test_acc"] <= 1.0
        wins = part["calib_loss"].min() == spdy["calib_loss"]
        assert (target in summary["spdy_lowest_loss_at"]) == wins
    for path in figure_files(p).values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unreachable_target_names_the_largest_reachable_speedup(spdy_dir):
    base = Params.model_validate(
        {"runtime": {"threads": 1, "progress": "off"}, "spdy": {**SPDY, "targets": [1.5, 500.0]}}
    )
    p = scoped(base, "spdy:lenet300100")
    with pytest.raises(PruneflowError, match="500x is unreachable.*at most.*Lower spdy.targets"):
        SPDY_SEARCH.run(p, item={"target": 500.0})


def test_database_for_another_grid_is_refused(spdy_dir):
    spdy = {**SPDY, "grid": {**SPDY["grid"], "steps": 4}}
    base = Params.model_validate({"runtime": {"threads": 1, "progress": "off"}, "spdy": spdy})
    p = scoped(base, "spdy:lenet300100")
    with pytest.raises(PruneflowError, match="grid"):
        Problem(p)
    assert discretize  # the DP's own input checks are tested in test_spdy_dp.py


def test_gradual_pruning_to_each_profile_then_measured_speedups(spdy_dir):
    p = _params()
    SPDY_SEARCH.run_all(p)
    SPDY_ONESHOT.run(p)
    runs = SPDY_GMP.run_all(p)
    assert len(runs) == 2 * 3  # targets x profiles x one seed
    profiles = pd.read_parquet(profiles_file(p))
    for record in runs:
        item = record["item"]
        model, info = load_checkpoint(run_checkpoint(p, item))
        chosen = profiles[
            (profiles["target"] == item["target"]) & (profiles["profile"] == item["profile"])
        ]
        for layer, sparsity in zip(chosen["layer"], chosen["sparsity"], strict=True):
            weight = model.get_submodule(layer).weight
            assert int((weight == 0).sum()) == round(sparsity * weight.numel()), layer
            assert info["layer_sparsity"][layer] == pytest.approx(
                float((weight == 0).double().mean()), abs=1e-6
            )
    summary = SPDY_RESULTS.run(p)["summary"]
    results = pd.read_parquet(results_file(p))
    assert list(results.columns) == list(RESULTS_COLUMNS) and len(results) == 6
    assert (results["measured_speedup"] > 0).all()
    assert (results["predicted_speedup"] >= results["target"] * 0.99).all()
    assert results["dense_acc"].nunique() == 1 and (results["acc"] > 0.1).all()
    table = results_markdown(p).read_text()
    assert table.count("\n") == 2 + 6 and "| lenet300100 |" in table  # a row per run group
    assert "| uniform | 1 |" in table and "minus uniform [95% CI]" in table
    assert summary["runs"] == 6
    # `pruneflow run spdy` prints the same table
    from rich.console import Console

    from pruneflow.cli import _results_table

    console = Console(record=True, width=200)
    _results_table(console, "lenet300100", summary["table"], summary["test_size"])
    printed = console.export_text()
    for line in table.splitlines()[2:]:
        assert all(cell.strip() in printed for cell in line.strip("|").split("|"))


def test_gmp_refuses_a_run_outside_the_params(spdy_dir):
    p = _params()
    with pytest.raises(PruneflowError, match="not one of the runs"):
        SPDY_GMP.run(p, item={"target": 2.0, "profile": "prior", "seed": 0})


def test_measured_speedups_are_refused_for_another_hosts_timing_table(spdy_dir):
    from pruneflow import layout
    from pruneflow.timing.table import read_timing_table, write_timing_table

    p = _params()
    SPDY_SEARCH.run_all(p)
    SPDY_ONESHOT.run(p)
    SPDY_GMP.run_all(p)
    # the table arrives from the serving host (a DVC pull): same layers, another CPU
    path = layout.timing_table(p)
    table, meta = read_timing_table(path, "lenet300100", Problem(p).layers)
    write_timing_table(path, table, {**meta, "host": {**meta["host"], "cpu": "Serving CPU 9000"}})
    with pytest.raises(PruneflowError, match="another host .*cpu: table 'Serving CPU 9000'"):
        SPDY_RESULTS.run(p)
    assert not results_file(p).exists()


def test_a_profile_measured_short_of_its_target_is_chosen_again_for_a_raised_target(
    spdy_dir, monkeypatch
):
    p = _params(verify={"rounds": 3, "tolerance": 0.02})
    SPDY_SEARCH.run_all(p)
    problem = Problem(p)

    def predicted(levels) -> float:  # noqa: ANN001
        return problem.discretize(p, 1.5).predicted_speedup(levels)

    measured: list[tuple[int, ...]] = []
    # every profile measures this share of its predicted speedup: 6% short, or more where the
    # grid's step put SPDY's 1.5x profile so far past the target that 6% short still meets it
    # (the table is measured on this host: its first profile predicted 1.50-1.6x and more)
    first = spdy_step.read_profile(p, 1.5)["level"].to_numpy()
    share = min(0.94, 0.97 * 1.5 / predicted(first))

    def short(self, profiles):  # noqa: ANN001, ANN202
        measured.extend(tuple(int(v) for v in levels) for levels in profiles)
        return [share * predicted(levels) for levels in profiles]

    monkeypatch.setattr(spdy_step._Measure, "__call__", short)
    SPDY_ONESHOT.run(p)
    table = pd.read_parquet(oneshot_file(p))
    attempts = pd.DataFrame(parquet_metadata(oneshot_file(p))["verify"])
    profiles = pd.read_parquet(profiles_file(p))
    assert len(attempts) == len(measured) >= 8
    for row in table.itertuples():
        mine = attempts[(attempts["target"] == row.target) & (attempts["profile"] == row.profile)]
        # the first attempt: the profile chosen for the target; each next one asks the table
        # for the target times what it over-promised the last one by
        assert mine["aim"].iloc[0] == row.target and len(mine) <= 1 + 3
        for prev, nxt in zip(mine.itertuples(), mine.iloc[1:].itertuples(), strict=False):
            assert nxt.aim == pytest.approx(row.target * prev.predicted / prev.measured)
            assert nxt.predicted >= nxt.aim * 0.99 and nxt.levels != prev.levels
        kept = mine[mine["aim"] == row.aim].iloc[0]
        assert row.measured_speedup == pytest.approx(share * predicted(kept["levels"]))
        levels = profiles[(profiles["target"] == row.target) & (profiles["profile"] == row.profile)]
        assert list(levels["level"]) == list(kept["levels"])
        if row.measured_speedup < 0.98 * row.target:  # only where the table reaches no further
            last = mine.iloc[-1]
            with pytest.raises(PruneflowError, match="unreachable"):
                problem.discretize(p, row.target * last["predicted"] / last["measured"])
    spdy = table[(table["profile"] == "spdy") & (table["target"] == 1.5)].iloc[0]
    assert spdy.aim > 1.5 and spdy.measured_speedup >= 0.98 * 1.5


def test_every_oneshot_profile_is_measured_end_to_end(spdy_dir):
    p = _params(verify={"rounds": 1, "tolerance": 0.02})
    SPDY_SEARCH.run_all(p)
    SPDY_ONESHOT.run(p)
    table = pd.read_parquet(oneshot_file(p))
    attempts = pd.DataFrame(parquet_metadata(oneshot_file(p))["verify"])
    assert len(table) == 8 and (table["measured_speedup"] > 0).all()
    counts = attempts.groupby(["target", "profile"]).size()
    assert len(counts) == 8 and counts.between(1, 2).all()
    for row in table.itertuples():  # kept: on target, or the fastest when none was
        mine = attempts[(attempts["target"] == row.target) & (attempts["profile"] == row.profile)]
        meets = mine[mine["measured"] >= 0.98 * row.target]
        best = meets["measured"].min() if len(meets) else mine["measured"].max()
        assert row.measured_speedup == best
