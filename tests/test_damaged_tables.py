"""A damaged table is one clear error, never a silently changed value nor a traceback: a
flipped exponent bit in a timing table, undecodable metadata, an accuracy outside [0, 1] or a
loss or FLOPs count that is not finite in an SDD level record, sweep table or CHEX run record
or comparison table."""

from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_chex_claims import _params as chex_report_params
from test_chex_claims import _table as chex_accuracies
from test_chex_claims import _write as write_comparison
from test_sdd_sweep import _params as sdd_params

from pruneflow import config
from pruneflow.chex import paths as chex_paths
from pruneflow.chex.report import read_run_record
from pruneflow.errors import PruneflowError
from pruneflow.io import parquet_metadata, read_parquet, write_parquet
from pruneflow.report.chex import chex_claims
from pruneflow.sdd.paths import read_level_record, read_sweep, sweep_file
from pruneflow.sdd.sweep import sweep_table
from pruneflow.timing.table import FORMAT, host_description, read_timing_table, write_timing_table


def _table(times: list[float]) -> tuple[pd.DataFrame, dict]:
    rows = [
        {
            "layer": "fc1",
            "layer_index": 0,
            "op": "linear",
            "level": level,
            "sparsity": 0.5 * level,
            "backend": "dense",
            "device": "cpu",
            "threads": 1,
            "batch_size": 64,
            "time_ms": t,
            "time_ms_p10": 0.9 * t,
            "time_ms_p90": 1.1 * t,
            "repeats": 5,
        }
        for level, t in enumerate(times)
    ]
    meta = {
        "format": FORMAT,
        "model": "lenet300100",
        "layers": ["fc1"],
        "all_layers": ["fc1"],
        "skipped_layers": [],
        "levels": [0.0, 0.5],
        "batch_size": 64,
        "threads": 1,
        "device": "cpu",
        "host": host_description(1),
        "dense_total_ms": 2.0,
        "prunable_dense_ms": 1.5,
        "remainder_ms": 0.5,
    }
    return pd.DataFrame(rows), meta


def test_a_timing_table_with_an_implausible_time_is_refused(tmp_path):
    frame, meta = _table([1.5, 0.9])
    good = write_timing_table(tmp_path / "good.parquet", frame, meta)
    assert len(read_timing_table(good, "lenet300100", ["fc1"])[0]) == 2
    for damaged in (2.7e-308, 3.0e12):  # what one flipped exponent bit makes of 0.9 ms
        frame.loc[1, "time_ms"] = damaged
        path = write_parquet(tmp_path / "damaged.parquet", frame, meta)  # past the writer
        with pytest.raises(PruneflowError, match="not a plausible time"):
            read_timing_table(path, "lenet300100", ["fc1"])


def test_undecodable_parquet_metadata_is_one_clear_error(tmp_path):
    table = pa.table({"a": [1, 2]}).replace_schema_metadata({b"pruneflow": b"\xff\xfe{"})
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(PruneflowError, match="corrupt metadata"):
        parquet_metadata(tmp_path / "t.parquet")
    pandas_meta = pa.table({"a": [1, 2]}).replace_schema_metadata({b"pandas": b"\xff\xfe{"})
    pq.write_table(pandas_meta, tmp_path / "p.parquet")
    with pytest.raises(PruneflowError, match="corrupt or truncated"):
        read_parquet(tmp_path / "p.parquet")


def _level_record(level: int, **values) -> dict:
    """A level record as sdd_level writes it."""
    return {
        "method": "magnitude",
        "retrain": "rewind",
        "seed": 0,
        "level": level,
        "sparsity": 1 - 0.5**level,
        "target_sparsity": 1 - 0.5**level,
        "remaining": 1000 // 2**level,
        "train_acc_noisy": 0.9,
        "train_acc_true": 0.8,
        "noise_fit": 0.7,
        "train_loss": 0.3,
        "test_acc": 0.85,
        "test_loss": 0.4,
        "test_size": 360,
        "learning_distance": 3.0,
        "final_epoch_loss": 0.3,
        **values,
    }


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("test_acc", 1.7, "'test_acc' = 1.7 is not a fraction in [0, 1]"),
        ("train_acc_true", -0.1, "'train_acc_true' = -0.1 is not a fraction in [0, 1]"),
        ("test_loss", math.inf, "'test_loss' = inf is not finite and >= 0"),
        ("learning_distance", math.nan, "'learning_distance' = nan is not finite and >= 0"),
        ("test_acc", None, "'test_acc' is null, expected a fraction in [0, 1]"),
        ("test_acc", "0.9", None),  # a number's text is a number: accepted
    ],
)
def test_an_sdd_level_record_out_of_range_is_one_line_naming_the_file(tmp_path, key, value, says):
    path = tmp_path / "level.json"
    path.write_text(json.dumps(_level_record(1, **{key: value})))
    if says is None:
        assert read_level_record(path)[key] == value
        return
    with pytest.raises(PruneflowError) as err:
        read_level_record(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {says}") and "\n" not in message


def test_an_sdd_record_without_noise_fit_is_clean_labels_but_one_without_test_acc_is_refused(
    tmp_path,
):
    path = tmp_path / "level.json"
    path.write_text(json.dumps(_level_record(1, noise_fit=None)))
    assert read_level_record(path)["noise_fit"] is None
    record = _level_record(1)
    del record["test_acc"]
    path.write_text(json.dumps(record))
    with pytest.raises(PruneflowError, match=f"^{path}: no 'test_acc'"):
        read_level_record(path)


def test_a_sweep_table_with_an_accuracy_above_one_is_refused_by_its_reader(workdir):
    p = config.scoped(sdd_params(), "sdd:lenet300100")
    table = sweep_table([_level_record(0), _level_record(1), _level_record(2, test_acc=1.25)])
    table["phase"] = "light"
    write_parquet(sweep_file(p), table)
    with pytest.raises(PruneflowError) as err:
        read_sweep(p)
    assert str(err.value) == (
        f"{sweep_file(p)}: 'test_acc' = 1.25 is not a fraction in [0, 1] (damaged?)"
    )


def _run_record(**values) -> dict:
    """A comparison run's record as chex_compare writes it (RunResult.record())."""
    return {
        "method": "chex",
        "target": 0.7,
        "seed": 0,
        "variant": None,
        "test_acc": 0.9,
        "test_loss": 0.3,
        "val_acc": 0.88,
        "flops_dense": 4_000_000,
        "flops": 1_200_000,
        "params_dense": 20_000,
        "params": 7_000,
        "channels": {"g0": 4},
        "sizes": {"g0": 16},
        "history": {"loss": [1.0], "acc": [0.5]},
        "exploration": [],
        "flops_reduction": 0.7,
        **values,
    }


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("test_acc", 94.6, "'test_acc' = 94.6 is not a fraction in [0, 1]"),
        ("flops", math.inf, "'flops' = inf is not finite and > 0"),
        ("flops", 0, "'flops' = 0 is not finite and > 0"),
        ("test_loss", -1.0, "'test_loss' = -1.0 is not finite and >= 0"),
        ("flops_reduction", math.nan, "'flops_reduction' = nan is not finite"),
    ],
)
def test_a_chex_run_record_out_of_range_is_one_line_naming_the_file(tmp_path, key, value, says):
    path = tmp_path / "chex-0.7-s0.json"
    path.write_text(json.dumps(_run_record(**{key: value})))
    with pytest.raises(PruneflowError) as err:
        read_run_record(path)
    assert str(err.value).startswith(f"{path}: {says}")
    path.write_text(json.dumps(_run_record()))
    assert read_run_record(path)["test_acc"] == 0.9


def test_a_chex_comparison_table_with_an_accuracy_above_one_is_refused_by_the_report(workdir):
    params = chex_report_params()
    p = config.scoped(params, "chex:resnet_mini")
    accuracies = chex_accuracies()
    accuracies[("static", 0.9)][1] = 95.8  # a percentage where a fraction belongs
    write_comparison(p, accuracies)
    with pytest.raises(PruneflowError) as err:
        chex_claims(params)
    assert str(err.value) == (
        f"{chex_paths.comparison_table(p)}: 'test_acc' = 95.8 is not a fraction in [0, 1] "
        "(damaged?)"
    )
