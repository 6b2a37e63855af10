"""The CHEX steps end to end on tiny data: train -> extract -> metrics.json; compare -> report;
and the resnet18_cifar path on a small CIFAR-format data set written in the test."""

import json
from pathlib import Path

import pandas as pd
import pytest
from test_datasets import write_cifar10

from pruneflow import config
from pruneflow.chex import paths
from pruneflow.chex.store import load_extracted
from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.steps.chex import CHEX_COMPARE, CHEX_EXTRACT, CHEX_REPORT, CHEX_TRAIN, compare_items
from pruneflow.steps.data import PREPARE

METRIC_KEYS = {
    "flops_dense",
    "flops_extracted",
    "params_dense",
    "params_extracted",
    "latency_ms_dense",
    "latency_ms_extracted",
    "test_acc",
    "max_abs_diff_extracted_vs_masked",
}
FAST = {"runtime": {"threads": 1, "progress": "off"}}


def _params(chex: dict, data: dict | None = None) -> Params:
    base = Params.model_validate({**FAST, "data": data or {}})
    return config.updated(base, chex=chex)


def test_train_extract_writes_metrics_and_a_loadable_submodel(workdir):
    chex = {
        "dataset": "digits",
        "train": {"epochs": 2, "batch_size": 256, "lr": 0.1},
        "delta_t": 0.5,
        "t_max": 1.5,
        "latency": {"repeats": 3},
    }
    p = _params(chex)
    PREPARE.run(config.scoped(p, "chex"))
    q = config.scoped(p, "chex:resnet_mini")
    summary = CHEX_TRAIN.run(q)["summary"]
    assert summary["prune_regrow_steps"] == 3 and summary["flops_reduction"] >= 0.7
    metrics = CHEX_EXTRACT.run(q)["summary"]
    stored = json.loads(paths.metrics_json(q).read_text())
    assert METRIC_KEYS <= stored.keys()
    assert stored["flops_extracted"] <= 0.3 * stored["flops_dense"]
    assert stored["flops_extracted"] == stored["flops_masked_effective"]
    assert stored["params_extracted"] < stored["params_dense"]
    assert stored["max_abs_diff_extracted_vs_masked"] < 1e-4
    assert metrics["test_acc"] == stored["test_acc"] == stored["test_acc_masked"]
    model, meta = load_extracted(paths.extracted_checkpoint(q))
    assert meta["channels"] == stored["channels"]
    history = pd.read_parquet(paths.exploration_table(q))
    assert sorted(history["step"].unique()) == [1, 2, 3]
    assert CHEX_TRAIN.run(q)["status"] == "cached"


def test_compare_items_run_one_by_one_and_report(workdir):
    chex = {
        "dataset": "digits",
        "train": {"epochs": 2, "batch_size": 256, "lr": 0.1},
        "delta_t": 0.5,
        "t_max": 1.0,
        "compare": {
            "targets": [0.7],
            "seeds": [0],
            "ablations": ["no_regrow", "arch_scratch"],
            "ablation_targets": None,  # the ablations run at the comparison's targets
        },
    }
    p = _params(chex)
    PREPARE.run(config.scoped(p, "chex"))
    q = config.scoped(p, "chex:resnet_mini")
    items = compare_items(q)
    assert {i["method"] for i in items} == {"chex", "static", "l1_norm", "slimming", "dense"}
    assert [i for i in items if i.get("variant")] == [
        {"method": "chex", "target": 0.7, "seed": 0, "variant": "no_regrow"},
        {"method": "chex", "target": 0.7, "seed": 0, "variant": "arch_scratch"},
    ]
    chex_run = {"method": "chex", "target": 0.7, "seed": 0}
    assert paths.run_record(q, chex_run) in CHEX_COMPARE.input_paths(q, items[-1])
    for item in items:
        assert CHEX_COMPARE.run(q, item=item)["status"] == "computed"
    paths.run_record(q, items[0]).unlink()
    assert CHEX_COMPARE.run(q, item=items[0])["status"] == "restored"
    CHEX_REPORT.run(q)
    frame = pd.read_parquet(paths.comparison_table(q))
    assert set(frame["method"]) == {"chex", "static", "l1_norm", "slimming"}
    assert {"method", "flops_reduction_target", "flops_reduction", "seed", "test_acc"} <= set(
        frame.columns
    )
    assert (frame["flops_reduction"] >= 0.7 - 1e-9).all() and (frame["flops_reduction"] < 0.8).all()
    for kind in ("accuracy", "channels", "exploration", "ablation"):
        assert paths.report_figure(q, kind).read_bytes()[:4] == b"\x89PNG"
    ablation = pd.read_parquet(paths.ablation_table(q))
    assert set(ablation["variant"]) == {"full", "no_regrow", "arch_scratch", ""}  # "": baselines
    regrow = json.loads(paths.run_record(q, items[-2]).read_text())["exploration"]
    assert regrow and all(row["regrown"] == 0 for row in regrow)
    scratch = json.loads(paths.run_record(q, items[-1]).read_text())
    chosen = json.loads(paths.run_record(q, chex_run).read_text())
    assert scratch["channels"] == chosen["channels"] and not scratch["exploration"]


def test_resnet18_cifar_path_on_a_tiny_cifar_set(workdir):
    # 48 images in the real format: 37 train (2 batches of 20), 3 val, 8 official test
    write_cifar10(Path("data"), per_batch=8)
    chex = {
        "dataset": "cifar10",
        "models": ["resnet18_cifar"],
        "train": {"epochs": 1, "batch_size": 20, "lr": 0.05},
        "delta_t": 0.5,
        "t_max": 1.0,
        "latency": {"repeats": 1, "batch_size": 2},
    }
    p = _params(chex, {"root": "data"})
    PREPARE.run(config.scoped(p, "chex"))
    q = config.scoped(p, "chex:resnet18_cifar")
    assert CHEX_TRAIN.run(q)["summary"]["prune_regrow_steps"] == 2
    metrics = CHEX_EXTRACT.run(q)["summary"]
    assert metrics["flops_extracted"] <= 0.3 * metrics["flops_dense"]
    assert metrics["max_abs_diff_extracted_vs_masked"] < 1e-3


def test_scope_refuses_a_model_not_listed():
    with pytest.raises(PruneflowError, match="not one of them"):
        config.scoped(Params(), "chex:smallcnn")
