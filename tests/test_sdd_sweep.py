"""Sparse double descent end to end through the steps: chains, crash and resume, gather, plots."""

from pathlib import Path

import pandas as pd
import pytest
import torch

import pruneflow.steps.sdd as sdd_steps
from pruneflow import config
from pruneflow.errors import PruneflowError
from pruneflow.io import read_parquet
from pruneflow.sdd.state import load_state
from pruneflow.sdd.sweep import SWEEP_COLUMNS, lottery_table
from pruneflow.steps.data import PREPARE
from pruneflow.steps.sdd import SDD_LEVEL, chains, level_file, plot_files, run_sweep


def _params(**sdd):
    torch.set_num_threads(1)
    p = config.updated(
        sdd={
            "dataset": "digits",
            "train": {"epochs": 2, "batch_size": 128},
            "retrain": {"epochs": 1, "batch_size": 128},
            "methods": ["magnitude"],
            "modes": ["rewind", "reinit"],
            "seeds": [0],
            "prune_fraction": 0.5,
            "final_sparsity": 0.9,
            "rewind_epoch": 1,
            **sdd,
        }
    )
    return p.model_copy(
        update={"runtime": p.runtime.model_copy(update={"threads": 1, "progress": "off"})}
    )


def _statuses(records, mode):
    return [
        (r["item"]["level"], r["status"])
        for r in records
        if r["step"] == "sdd_level" and r["item"]["mode"] == mode
    ]


def test_sweep_crashes_at_a_level_and_resumes_there(workdir, monkeypatch):
    p = _params()
    real = sdd_steps.retrain

    def crash_at_rewind_level_3(*args, description="", **kw):
        if description.endswith("rewind seed 0 level 3"):
            raise RuntimeError("worker lost at level 3")
        return real(*args, description=description, **kw)

    monkeypatch.setattr(sdd_steps, "retrain", crash_at_rewind_level_3)
    with pytest.raises(RuntimeError, match="level 3"):
        run_sweep(p, plots=False)
    view = config.scoped(p, "sdd:lenet300100")
    item = {"method": "magnitude", "mode": "rewind", "seed": 0}
    assert level_file(view, {**item, "level": 2}).exists()
    assert not level_file(view, {**item, "level": 3}).exists()  # nothing half-written
    assert not level_file(view, {**item, "level": 3}).with_suffix(".json").exists()

    monkeypatch.setattr(sdd_steps, "retrain", real)
    records = run_sweep(p)
    assert _statuses(records, "rewind") == [
        (1, "cached"),
        (2, "cached"),
        (3, "computed"),
        (4, "computed"),
    ]
    assert [r["status"] for r in records if r["step"] == "sdd_dense"] == ["cached"]

    table = read_parquet(view_sweep := sdd_steps.sweep_file(view), SWEEP_COLUMNS)
    assert view_sweep == Path("artifacts/sdd/digits-lenet300100/sweep.parquet")
    assert len(table) == 2 * 5 and set(table["retrain"]) == {"rewind", "reinit"}
    rewind = table[table["retrain"] == "rewind"].set_index("level")
    assert rewind["sparsity"].tolist() == pytest.approx([0, 0.5, 0.75, 0.875, 0.9375], abs=1e-4)
    assert rewind["phase"].isin(["light", "critical", "sweet", "collapsed"]).all()
    assert (table["learning_distance"] > 0).all()
    assert table.groupby("level")["test_acc"].nunique().loc[0] == 1  # one shared dense point

    # masks shrink monotonically along the chain and pruned weights are zero in the files
    previous = None
    for level in range(1, 5):
        groups, _, info = load_state(level_file(view, {**item, "level": level}))
        assert info["level"] == level
        for name, mask in groups["mask"].items():
            assert not groups["weight"][f"{name}.weight"][~mask].any()
            if previous is not None:
                assert not (mask & ~previous[name]).any()
        previous = groups["mask"]

    phases = pd.read_parquet(sdd_steps.phases_file(view))
    assert set(phases["phase"]) <= {"light", "critical", "sweet", "collapsed"}
    lottery = pd.read_parquet(sdd_steps.lottery_file(view))
    assert len(lottery) == 5 and {"rewind_test_acc", "reinit_test_acc"} <= set(lottery.columns)
    assert lottery_table(table).shape[0] == 5
    for png in plot_files(view).values():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a sweep that goes further reuses every cached level and only adds the new one
    records = run_sweep(_params(final_sparsity=0.95), plots=False)
    assert _statuses(records, "rewind") == [(i, "cached") for i in range(1, 5)] + [(5, "computed")]


def test_bad_level_items_fail_before_any_training(workdir):
    p = config.scoped(_params(), "sdd:lenet300100")
    PREPARE.run(p)
    bad = [
        ({"method": "magnitude", "mode": "lottery", "seed": 0, "level": 1}, "retrain mode"),
        ({"method": "taylor", "mode": "rewind", "seed": 0, "level": 1}, "pruning method"),
        ({"method": "magnitude", "mode": "rewind", "seed": 0, "level": 0}, "level must be"),
        ({"method": "magnitude", "mode": "rewind", "seed": 0}, "expected keys"),
    ]
    for item, match in bad:
        with pytest.raises(PruneflowError, match=match):
            SDD_LEVEL.run(p, item=item)
    with pytest.raises(PruneflowError, match="run the step that makes it first"):
        SDD_LEVEL.run(p, item={"method": "magnitude", "mode": "rewind", "seed": 0, "level": 1})


def test_chains_are_independent_per_method_and_seed_with_reinit_beside_rewind():
    p = config.scoped(
        _params(
            methods=["magnitude", "random"], seeds=[0, 1], modes=["finetune", "rewind", "reinit"]
        ),
        "sdd:lenet300100",
    )
    all_chains = chains(p)
    assert len(all_chains) == 2 * 2 * 2  # (seed, method) x {finetune, rewind + reinit}
    finetune = [c for c in all_chains if c[0]["mode"] == "finetune"]
    assert all([i["level"] for i in c] == [1, 2, 3, 4] for c in finetune)
    lottery = [c for c in all_chains if c[0]["mode"] == "rewind"]
    assert len(finetune) == len(lottery) == 4
    for chain in lottery:  # reinit level L right after rewind level L, whose masks it takes
        assert [(i["mode"], i["level"]) for i in chain] == [
            (mode, level) for level in (1, 2, 3, 4) for mode in ("rewind", "reinit")
        ]
        assert len({(i["method"], i["seed"]) for i in chain}) == 1
    curves = sdd_steps.curves(p)
    assert len(curves) == 2 * 2 * 3
    assert sorted(i["mode"] for c in all_chains for i in c) == sorted(
        i["mode"] for c in curves for i in c
    )


def test_reinit_retrains_the_rewind_masks_from_fresh_weights(workdir):
    p = _params(final_sparsity=0.8, seeds=[0, 1])  # levels 1-3, rewind + reinit
    run_sweep(p, plots=False)
    view = config.scoped(p, "sdd:lenet300100")
    for seed in (0, 1):
        for level in (1, 2, 3):
            item = {"method": "magnitude", "seed": seed, "level": level}
            rewind, _, _ = load_state(level_file(view, {**item, "mode": "rewind"}))
            reinit, _, info = load_state(level_file(view, {**item, "mode": "reinit"}))
            assert info["mode"] == "reinit" and info["level"] == level
            assert rewind["mask"].keys() == reinit["mask"].keys()
            for name, mask in rewind["mask"].items():
                assert torch.equal(reinit["mask"][name], mask), (seed, level, name)
                kept_rewind = rewind["weight"][f"{name}.weight"][mask]
                kept_reinit = reinit["weight"][f"{name}.weight"][mask]
                assert not torch.allclose(kept_rewind, kept_reinit), (seed, level, name)
                assert not reinit["weight"][f"{name}.weight"][~mask].any()
    # the two chains differ in their start points only: reinit's learning distance is
    # measured from its own fresh start, not from the rewind point
    table = read_parquet(sdd_steps.sweep_file(view), SWEEP_COLUMNS)
    pruned = table[table["level"] > 0].set_index(["retrain", "seed", "level"])
    assert pruned.loc["reinit", "sparsity"].tolist() == pruned.loc["rewind", "sparsity"].tolist()
    assert (
        pruned.loc["reinit", "learning_distance"] != pruned.loc["rewind", "learning_distance"]
    ).all()


def test_reinit_needs_the_rewind_chain():
    with pytest.raises(Exception, match="must list rewind too"):
        _params(modes=["finetune", "reinit"])
