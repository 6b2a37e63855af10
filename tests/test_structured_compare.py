"""The structured comparison's baselines (CHEX's re-allocation under a FLOPs ceiling,
Torch-Pruning's global magnitude pruning, uniform widths), the bisection on measured speedup,
and the realized models' ONNX export with the three comparison steps end to end on 8x8 digits
(seconds)."""

import json
import math

import pandas as pd
import pytest
import torch

from pruneflow import config
from pruneflow.chex.flops import FlopsModel, count_flops
from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.io import parquet_metadata
from pruneflow.report.structured import structured_section
from pruneflow.steps.data import PREPARE
from pruneflow.steps.structured import STRUCTURED_STEPS
from pruneflow.steps.structured_compare import STRUCTURED_COMPARE_STEPS, compare_items
from pruneflow.steps.structured_export import STRUCTURED_EXPORT
from pruneflow.structured import paths
from pruneflow.structured.baselines import (
    calibrate,
    chex_realloc,
    group_widths_of,
    rebuild,
    tp_magnitude,
    uniform_level,
)
from pruneflow.structured.comparison import read_comparison
from pruneflow.structured.timing import read_table
from pruneflow.structured.widths import structured_groups, thin_copy
from pruneflow.train import seeded_build

SHAPE = (1, 28, 28)


def _model(name: str):
    model = seeded_build(name, 10, SHAPE, 0).eval()
    # distinct BN scales, so that the ranking is not a tie
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=gen) + 0.1
    example = torch.zeros(1, *SHAPE)
    groups, _ = structured_groups(model, example)
    return model, example, groups


def test_chex_realloc_meets_its_flops_ceiling_and_keeps_the_largest_scales():
    model, example, groups = _model("resnet_mini")
    flops = FlopsModel(model, SHAPE, groups)
    masks = chex_realloc(model, groups, flops, 0.5, 0.1)
    counts = [int(masks[g.name].sum()) for g in groups]
    assert flops.flops(counts) <= 0.5 * flops.dense() * (1 + 1e-9)
    assert all(c >= math.ceil(0.1 * g.size) for c, g in zip(counts, groups, strict=True))
    thin = thin_copy(model, groups, {g: m.nonzero().flatten() for g, m in masks.items()})
    assert count_flops(thin, SHAPE) == pytest.approx(flops.flops(counts), rel=1e-6)
    # within a group, a kept channel's scale is never below a dropped one's
    first = groups[0]
    bn = dict(model.named_modules())[first.bns[0]].weight.detach().abs()
    kept, dropped = bn[masks[first.name]], bn[~masks[first.name]]
    if dropped.numel():
        assert kept.min() >= dropped.max()


@pytest.mark.parametrize("name", ["resnet_mini", "smallcnn"])
def test_tp_magnitude_thins_the_groups_and_its_weights_load_into_the_rebuilt_model(name):
    model, example, groups = _model(name)
    sub = tp_magnitude(model, example, 0.5, 0.9)
    widths = group_widths_of(sub, groups)
    assert all(1 <= w <= g.size for w, g in zip(widths, groups, strict=True))
    assert sum(widths) < sum(g.size for g in groups)
    again = rebuild(model, groups, widths)
    again.load_state_dict(sub.state_dict())
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(again(x), sub(x))
    # the classifier's outputs stay whole
    assert again(x).shape == (3, 10)


def test_calibrate_bisects_to_the_budget_closest_to_the_target():
    # a budget b prunes more as it grows: speedup 1 + 2b
    found = calibrate(lambda b: b, lambda m: 1.0 + 2.0 * m, 1.5, 0.0, 1.0, 8, True)
    assert found.measured_speedup == pytest.approx(1.5, abs=0.01)
    assert found.budget == pytest.approx(0.25, abs=0.005)
    assert len(found.tried) == 8
    # a FLOPs fraction prunes less as it grows: speedup 1 / f
    found = calibrate(lambda f: f, lambda m: 1.0 / m, 2.0, 0.05, 1.0, 10, False)
    assert found.budget == pytest.approx(0.5, abs=0.01)
    with pytest.raises(PruneflowError, match="low < high"):
        calibrate(lambda b: b, lambda m: m, 1.0, 1.0, 0.5, 3, True)


FAST = {"runtime": {"threads": 1, "progress": "off"}}
STRUCTURED = {
    "dataset": "digits",
    "models": ["smallcnn"],
    "train": {"epochs": 1, "batch_size": 128},
    "levels": 3,
    "min_fraction": 0.25,
    "timing": {"batch_size": 64, "rounds": 1, "max_repeats": 3, "max_seconds": 0.01},
    "recon": {"calib_samples": 128, "rows": 2048},
    "targets": [1.2],
    "search": {"candidates": 3, "max_no_improvement": 2, "buckets": 500, "calib_samples": 128},
    "finetune_epochs": 1,
    "measure_repeats": 4,
    "measure_passes": 2,
    "measure_block_seconds": 0.0,  # blocks of 2 runs: what is asserted is not the speed
    "compare": {"seeds": [0, 1], "calibration_steps": 3, "calibration_repeats": 3},
}


def test_export_and_compare_steps_end_to_end(workdir, tmp_path):
    p = config.updated(Params.model_validate(FAST), structured=STRUCTURED)
    PREPARE.run(config.scoped(p, "structured"))
    q = config.scoped(p, "structured:smallcnn")
    for step in STRUCTURED_STEPS:  # dense, profile, database, search, realize
        step.run(q)
    STRUCTURED_EXPORT.run(q)
    export = pd.read_parquet(paths.export_table(q))
    assert list(export["target"]) == [1.2]
    assert paths.onnx_model(q, 1.2).is_file() and paths.onnx_model(q, None).is_file()
    row = export.iloc[0]
    assert row["max_abs_diff"] <= 1e-3 and row["agrees_with_torch"] >= 0.95
    assert row["ort_speedup"] > 0 and row["torch_speedup"] > 0
    # the ONNX file holds the thinned model: fewer weights than the dense one
    dense_bytes = paths.onnx_model(q, None).stat().st_size
    assert paths.onnx_model(q, 1.2).stat().st_size < dense_bytes
    methods = ["search", "uniform", "chex_realloc", "tp_magnitude"]
    for step in STRUCTURED_COMPARE_STEPS:
        step.run_all(q) if step.fan_out else step.run(q)
    profiles = pd.read_parquet(paths.profiles_table(q))
    assert sorted(profiles["method"]) == sorted(methods)
    by = profiles.set_index("method")
    assert by.loc["chex_realloc", "calibration_steps"] == 3
    assert by.loc["search", "calibration_steps"] == 0
    assert by.loc["tp_magnitude", "predictor"] == "MACs"
    # the search and uniform profiles sit on the grid: the table predicts them
    assert by.loc["search", "predicted_speedup"] == pytest.approx(by.loc["search", "table_speedup"])
    table = read_table(paths.timing_table(q), "smallcnn", [f"conv{i}.0" for i in range(1, 6)])
    # uniform widths start at the table's level and are re-aimed on their measured speedup
    tried = [
        a for a in parquet_metadata(paths.profiles_table(q))["verify"] if a["rule"] == "uniform"
    ]
    assert tried[0]["levels"] == [uniform_level(table, 1.2 * 1.03)] * 5
    assert tried[0]["aim"] == pytest.approx(1.2 * 1.03)
    level = int(by.loc["uniform", "budget"])
    assert [level] * 5 in [a["levels"] for a in tried]
    assert by.loc["uniform", "calibration_steps"] == len(tried)
    assert json.loads(by.loc["uniform", "widths"]) == table.widths[:, level].tolist()
    for method in ("uniform", "chex_realloc", "tp_magnitude"):  # else one error line
        assert by.loc[method, "calibrated_speedup"] >= 0.95 * 1.2
    assert len(compare_items(q)) == 8
    runs, summary = read_comparison(q)
    assert len(runs) == 8 and set(runs["seed"]) == {0, 1}
    assert ((runs["test_acc"] >= 0) & (runs["test_acc"] <= 1)).all()
    assert (runs["measured_speedup"] > 0).all()
    assert (runs["finetune_epochs"] == 1).all()
    s = summary.set_index("method")
    assert (s["n"] == 2).all()
    assert math.isnan(s.loc["search", "diff_vs_search"])
    for m in methods[1:]:
        diff = s.loc[m, "diff_vs_search"]
        mean = s.loc[m, "test_acc_mean"] - s.loc["search", "test_acc_mean"]
        assert diff == pytest.approx(mean)
        assert s.loc[m, "diff_low"] <= diff <= s.loc[m, "diff_high"]
    metrics = json.loads(paths.compare_metrics_json(q).read_text())
    assert set(metrics["1.2x"]) == set(methods)
    section = structured_section(p, tmp_path)
    tables = [b for b in section.blocks if getattr(b, "key", "") == "structured-compare-smallcnn"]
    assert len(tables) == 1 and len(tables[0].rows) == 4


def test_uniform_level_names_the_best_uniform_speedup_when_out_of_reach(workdir):
    class Table:
        times_ms = torch.ones(2, 3, 3).numpy()
        dense_total_ms = 3.0
        meta = {"model": "m"}

        @staticmethod
        def predict_ms(levels):
            return 1.0 + sum(1.0 / (1 + v) for v in levels)

    assert uniform_level(Table, 1.2) == 1
    with pytest.raises(PruneflowError, match="narrowest uniform level gives 1.8x"):
        uniform_level(Table, 3.0)
