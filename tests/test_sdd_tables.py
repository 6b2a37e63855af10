"""Sparse double descent: the sweep table, seed means, phases per curve, lottery comparison."""

import numpy as np
import pytest

from pruneflow.errors import PruneflowError
from pruneflow.sdd.schedule import schedule
from pruneflow.sdd.sweep import (
    LOTTERY_COLUMNS,
    add_phases,
    boundaries,
    lottery_table,
    mean_curves,
    sweep_table,
)

S = schedule(0.2, 0.999)
DD = np.r_[
    np.full(10, 0.84),
    [0.82, 0.81, 0.80, 0.80],
    np.linspace(0.82, 0.89, 9),
    [0.89, 0.88, 0.86, 0.84, 0.80, 0.7, 0.6, 0.5, 0.4],
]
FLAT_THEN_DOWN = np.r_[np.full(20, 0.86), np.linspace(0.84, 0.3, len(S) - 20)]


def _records(seeds=(0, 1)):
    out = []
    for seed in seeds:
        for mode, curve in (("rewind", DD), ("reinit", FLAT_THEN_DOWN)):
            for level, (s, acc) in enumerate(zip(S, curve, strict=True)):
                out.append(
                    {
                        "method": "magnitude",
                        "retrain": mode,
                        "seed": seed,
                        "level": level,
                        "sparsity": s,
                        "train_acc_noisy": 1.0,
                        "train_acc_true": 0.8,
                        "test_acc": acc + 0.002 * seed,
                        "test_loss": 1 - acc,
                        "test_size": 1000,
                        "learning_distance": 10.0 - level * 0.1,
                    }
                )
    return out


def test_sweep_table_orders_rows_and_checks_chains():
    records = _records()
    table = sweep_table(records[::-1])
    assert list(table.columns[:4]) == ["method", "retrain", "seed", "level"]
    first = table[(table["retrain"] == "reinit") & (table["seed"] == 0)]
    assert first["level"].tolist() == list(range(len(S)))
    with pytest.raises(PruneflowError, match="not 0, 1"):
        sweep_table([r for r in records if not (r["level"] == 3 and r["seed"] == 1)])
    with pytest.raises(PruneflowError, match="repeat"):
        sweep_table(records + records[:1])
    with pytest.raises(PruneflowError, match="lack learning_distance"):
        sweep_table([{k: v for k, v in r.items() if k != "learning_distance"} for r in records])


def test_phases_per_seed_and_for_the_seed_mean():
    table, phases = add_phases(sweep_table(_records()), standard_errors=1.0, window=1)
    assert set(table["phase"]) == {"light", "critical", "sweet", "collapsed"}
    rewind = phases[phases["retrain"] == "rewind"]
    assert rewind["seed"].isna().sum() == 4  # the mean curve's four phases
    assert set(rewind.dropna(subset=["seed"])["seed"]) == {0, 1}
    reinit = phases[phases["retrain"] == "reinit"]
    assert set(reinit["phase"]) == {"light", "collapsed"} and not reinit["double_descent"].any()
    bounds = boundaries(phases)
    assert bounds["magnitude/rewind/mean"]["double_descent"] is True
    assert bounds["magnitude/reinit/seed0"]["double_descent"] is False
    assert bounds["magnitude/rewind/seed0"]["critical"][0] == pytest.approx(S[10], abs=1e-6)


def test_single_seed_has_no_mean_rows():
    _, phases = add_phases(sweep_table(_records(seeds=(0,))))
    assert phases["seed"].notna().all()


def test_lottery_table_puts_rewind_and_reinit_side_by_side():
    table, phases = add_phases(sweep_table(_records()))
    lot = lottery_table(table, phases)
    assert len(lot) == len(S) and (lot["n_seeds"] == 2).all()
    means = mean_curves(table)
    at12 = means[(means["retrain"] == "rewind") & (means["level"] == 12)]["test_acc"].item()
    row = lot[lot["level"] == 12].iloc[0]
    assert row["rewind_test_acc"] == pytest.approx(at12)
    assert row["reinit_minus_rewind"] == pytest.approx(0.86 - 0.80)
    assert row["rewind_phase"] == "critical" and row["reinit_phase"] == "light"
    assert row["remaining_pct"] == pytest.approx(100 * (1 - S[12]))
    assert list(lot.columns) == [*LOTTERY_COLUMNS, "rewind_phase", "reinit_phase"]


def test_lottery_table_keeps_its_schema_with_one_mode_or_neither():
    table, phases = add_phases(sweep_table(_records()))
    both = lottery_table(table, phases)
    only_reinit = lottery_table(table[table["retrain"] == "reinit"], phases)
    assert list(only_reinit.columns) == list(both.columns)
    assert only_reinit["reinit_test_acc"].tolist() == pytest.approx(both["reinit_test_acc"])
    assert only_reinit["sparsity"].tolist() == pytest.approx(both["sparsity"], abs=1e-12)
    assert only_reinit["rewind_test_acc"].isna().all()
    assert only_reinit["reinit_minus_rewind"].isna().all()
    assert (only_reinit["rewind_phase"] == "").all() and (only_reinit["n_seeds"] == 2).all()
    finetune = table[table["retrain"] == "reinit"].assign(retrain="finetune")
    empty = lottery_table(finetune)
    assert empty.empty and list(empty.columns) == list(LOTTERY_COLUMNS)
    assert empty["rewind_test_acc"].dtype == "float64" and empty["level"].dtype == "int64"
