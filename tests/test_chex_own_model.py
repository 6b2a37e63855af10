"""CHEX on the user's own checkpoint and layer selection: ``chex.weights`` is the comparison's
dense reference (CHEX itself still trains from scratch, and says so), and ``chex.include`` /
``chex.exclude`` choose the channel groups CHEX (and its baselines) explore and prune."""

from __future__ import annotations

import json

import pytest
import torch

from pruneflow import config
from pruneflow.chex import paths
from pruneflow.chex.arch import build_model
from pruneflow.chex.groups import find_groups
from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.io import load_tensors
from pruneflow.models.preflight import check_own_inputs
from pruneflow.steps.chex import CHEX_COMPARE, CHEX_EXTRACT, CHEX_TRAIN
from pruneflow.steps.data import PREPARE, load_data, read_labels
from pruneflow.train import evaluate

MODEL = "resnet_mini"
FAST = {"runtime": {"threads": 1, "progress": "off"}}


def _params(**chex) -> Params:
    base = Params.model_validate(FAST)
    tree = {
        "dataset": "digits",
        "models": [MODEL],
        "train": {"epochs": 2, "batch_size": 256, "lr": 0.1},
        "delta_t": 0.5,
        "t_max": 1.5,
        "latency": {"repeats": 2},
        "compare": {"targets": [0.5], "seeds": [0], "methods": ["static"], "ablations": []},
        **chex,
    }
    return config.updated(base, chex=tree)


def test_chex_weights_are_the_dense_reference_and_chex_still_trains(workdir, capsys):
    torch.manual_seed(1)
    trained = build_model(MODEL, 10, (1, 8, 8), 7).state_dict()
    torch.save(trained, workdir / "mine.pt")
    p = _params(weights={MODEL: "mine.pt"})
    PREPARE.run(config.scoped(p, "chex"))
    q = config.scoped(p, f"chex:{MODEL}")
    assert q.model.weights == "mine.pt"
    dense = {"method": "dense", "target": 0.0, "seed": 0}
    assert workdir / "mine.pt" in [path.resolve() for path in CHEX_COMPARE.input_paths(q, dense)]
    static = {"method": "static", "target": 0.5, "seed": 0}
    assert not any(path.name == "mine.pt" for path in CHEX_COMPARE.input_paths(q, static))

    CHEX_COMPARE.run(q, item=dense)
    stored = json.loads(paths.run_record(q, dense).read_text())
    # loaded and evaluated, not trained: no training history
    assert stored["weights"]["path"] == "mine.pt" and stored["history"]["loss"] == []
    model = build_model(MODEL, 10, (1, 8, 8), 0)
    model.load_state_dict(trained)
    frame, _ = read_labels(q)
    test = frame.index[frame["split"] == "test"].to_numpy()
    expected = evaluate(model, load_data(q), test, frame["true_label"].to_numpy())[1]
    assert stored["test_acc"] == pytest.approx(expected)
    # the other methods train from scratch whatever the weights
    other = CHEX_COMPARE.run(q, item=static)["summary"]
    assert json.loads(paths.run_record(q, static).read_text())["weights"] is None
    assert other["flops_reduction"] >= 0.5
    CHEX_TRAIN.run(q)
    assert "CHEX trains from scratch by definition" in capsys.readouterr().err


def test_chex_exclude_leaves_a_channel_group_whole(workdir):
    p = _params(exclude=["stage3.conv2"], flops_reduction=0.5)
    PREPARE.run(config.scoped(p, "chex"))
    q = config.scoped(p, f"chex:{MODEL}")
    CHEX_TRAIN.run(q)
    stored = CHEX_EXTRACT.run(q)["summary"]
    metrics = json.loads(paths.metrics_json(q).read_text())
    # the excluded conv's group (with the shortcut its channels meet in a sum) is not explored:
    # no mask, all 32 channels kept
    masks = load_tensors(paths.masks_file(q))
    assert set(masks) == {"conv1", "stage1.conv1", "stage2.conv1", "stage2.conv2", "stage3.conv1"}
    assert metrics["channels"]["stage3.conv2"] == 32
    assert stored["flops_reduction"] >= 0.5 - 1e-9
    # the extracted model keeps all 32 channels of that group
    from pruneflow.chex.store import load_extracted

    sub, _ = load_extracted(paths.extracted_checkpoint(q))
    assert sub.get_submodule("stage3.conv2").out_channels == 32


def test_chex_include_takes_the_groups_of_the_matching_convs():
    model = build_model(MODEL, 10, (1, 8, 8), 0)
    groups = find_groups(model, torch.zeros(2, 1, 8, 8), include=["stage2.*"])
    # stage2.shortcut.0 pulls in its residual group, named by its first conv
    assert [g.name for g in groups] == ["stage2.conv1", "stage2.conv2"]


def test_chex_patterns_that_match_nothing_are_one_line_before_any_work(workdir):
    p = _params(include=["fc"])  # a Linear: CHEX prunes conv output channels
    with pytest.raises(PruneflowError, match="chex.include pattern 'fc' matches none") as err:
        check_own_inputs(p, "chex")
    assert "\n" not in str(err.value)
    assert not (workdir / "artifacts").exists()
    with pytest.raises(PruneflowError, match="leave no channel group"):
        find_groups(
            build_model(MODEL, 10, (1, 8, 8), 0), torch.zeros(2, 1, 8, 8), exclude=["*conv*"]
        )
