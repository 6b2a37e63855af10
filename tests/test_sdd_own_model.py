"""Sparse double descent on the user's own checkpoint and layer selection: ``sdd.weights``
replaces dense training (the same dense file and record, the file's hash an input), and
``sdd.include`` / ``sdd.exclude`` choose the layers the sweep prunes."""

from __future__ import annotations

import pytest
import torch

from pruneflow import config
from pruneflow.errors import PruneflowError
from pruneflow.io import read_json, read_parquet
from pruneflow.models import build
from pruneflow.models.preflight import check_own_inputs
from pruneflow.sdd.evaluation import Splits, level_metrics
from pruneflow.sdd.paths import dense_file, level_file, record_file, sweep_file
from pruneflow.sdd.state import load_state
from pruneflow.sdd.sweep import SWEEP_COLUMNS
from pruneflow.steps import STEPS
from pruneflow.steps.data import load_data, read_labels
from pruneflow.steps.sdd import run_sweep

MODEL = "lenet300100"


def _params(**sdd) -> config.Params:
    tree = {
        "runtime": {"threads": 1, "progress": "off"},
        "sdd": {
            "dataset": "digits",
            "models": [MODEL],
            "train": {"epochs": 1, "batch_size": 128},
            "retrain": {"epochs": 1, "batch_size": 128},
            "methods": ["magnitude"],
            "modes": ["finetune", "rewind"],
            "seeds": [0],
            "prune_fraction": 0.5,
            "final_sparsity": 0.7,
            **sdd,
        },
    }
    return config.from_dict(tree)


def _save_trained(path) -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    state = build(MODEL, 10, (1, 8, 8)).state_dict()
    torch.save(state, path)
    return state


def test_sdd_weights_replace_dense_training_and_feed_the_sweep(workdir):
    trained = _save_trained(workdir / "mine.pt")
    params = _params(weights={MODEL: "mine.pt"})
    p = config.scoped(params, f"sdd:{MODEL}")
    assert p.model.weights == "mine.pt"
    STEPS["prepare"].run(p)
    done = STEPS["sdd_dense"].run(p, item={"seed": 0})
    summary = done["summary"]
    assert summary["weights"]["path"] == "mine.pt" and len(summary["weights"]["hash"]) > 8
    assert summary["final_epoch_loss"] is None  # nothing was trained
    state, arch, info = load_state(dense_file(p, 0))
    for key, tensor in trained.items():
        assert torch.equal(state["weight"][key], tensor), key
    # the rewind point (epoch 0) is the seed's initialisation, not the user's weights
    assert torch.equal(state["rewind"]["fc1.weight"], state["init"]["fc1.weight"])
    assert not torch.equal(state["init"]["fc1.weight"], trained["fc1.weight"])
    assert info["weights"] == summary["weights"]
    # level 0 is the user's model evaluated on the same splits as a trained one
    model = build(MODEL, 10, (1, 8, 8))
    model.load_state_dict(trained)
    expected = level_metrics(model, load_data(p), Splits(read_labels(p)[0]))
    record = read_json(record_file(dense_file(p, 0)))
    assert record["test_acc"] == expected["test_acc"]
    assert record["test_size"] == expected["test_size"]

    # the sweep's first level starts from those weights
    STEPS["sdd_level"].run(
        p, item={"method": "magnitude", "mode": "finetune", "seed": 0, "level": 1}
    )
    level, _, _ = load_state(
        level_file(p, {"method": "magnitude", "mode": "finetune", "seed": 0, "level": 1})
    )
    assert set(level["mask"]) == {"fc1", "fc2", "fc3"}

    # the whole sweep runs from them: level 0 of every curve is the user's model
    run_sweep(params, plots=False)
    sweep = read_parquet(sweep_file(p), SWEEP_COLUMNS)
    dense_rows = sweep[sweep["level"] == 0]
    assert len(dense_rows) == 2 and (dense_rows["test_acc"] == expected["test_acc"]).all()
    assert sorted(sweep["level"].unique()) == [0, 1, 2]

    # the file's content is the input: same name, new weights -> computed again
    assert STEPS["sdd_dense"].run(p, item={"seed": 0})["status"] == "cached"
    torch.manual_seed(6)
    torch.save(build(MODEL, 10, (1, 8, 8)).state_dict(), workdir / "mine.pt")
    assert STEPS["sdd_dense"].run(p, item={"seed": 0})["status"] == "computed"


def test_sdd_weights_with_a_rewind_epoch_is_refused():
    with pytest.raises(PruneflowError, match="rewind_epoch"):
        _params(weights={MODEL: "mine.pt"}, rewind_epoch=1)


def test_sdd_include_exclude_choose_the_pruned_layers(workdir):
    params = _params(exclude=["fc3"], modes=["finetune"])
    p = config.scoped(params, f"sdd:{MODEL}")
    STEPS["prepare"].run(p)
    STEPS["sdd_dense"].run(p, item={"seed": 0})
    item = {"method": "magnitude", "mode": "finetune", "seed": 0, "level": 1}
    STEPS["sdd_level"].run(p, item=item)
    level, _, _ = load_state(level_file(p, item))
    dense, _, _ = load_state(dense_file(p, 0))
    assert set(level["mask"]) == {"fc1", "fc2"}
    # the level's sparsity is over the pruned layers; the excluded layer keeps every weight
    record = read_json(record_file(level_file(p, item)))
    kept = sum(int(m.sum()) for m in level["mask"].values())
    total = sum(m.numel() for m in level["mask"].values())
    assert record["sparsity"] == pytest.approx(1 - kept / total) and record["remaining"] == kept
    assert bool((level["weight"]["fc3.weight"] != 0).all())
    assert dense["weight"]["fc3.weight"].shape == level["weight"]["fc3.weight"].shape

    include = config.scoped(_params(include=["fc2"], modes=["finetune"]), f"sdd:{MODEL}")
    STEPS["sdd_dense"].run(include, item={"seed": 0})
    STEPS["sdd_level"].run(include, item=item)
    assert set(load_state(level_file(include, item))[0]["mask"]) == {"fc2"}


def test_sdd_patterns_that_match_nothing_are_one_line_before_any_work(workdir):
    params = _params(exclude=["conv*"])
    with pytest.raises(PruneflowError, match="exclude pattern 'conv\\*' matches none") as err:
        check_own_inputs(params, "sdd")
    assert "\n" not in str(err.value)
    assert not (workdir / "artifacts").exists()
