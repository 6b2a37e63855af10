"""model.weights: a user's trained checkpoint replaces dense training (same outputs, no
training), read without unpickling, its names and shapes checked before anything is written."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pruneflow import config, layout
from pruneflow.checkpoint import load_checkpoint
from pruneflow.errors import PruneflowError
from pruneflow.io import read_json
from pruneflow.models import build
from pruneflow.models.weights import read_state_dict
from pruneflow.steps import STEPS


def _params(**model) -> config.Params:
    return config.from_dict(
        {"data": {"dataset": "digits"}, "model": {"name": "lenet300100", **model}}
    )


def _trained() -> torch.nn.Module:
    torch.manual_seed(3)
    return build("lenet300100", 10, (1, 8, 8))


def test_weights_skip_training_and_write_the_dense_checkpoint(workdir):
    model = _trained()
    torch.save({"state_dict": model.state_dict(), "epoch": 7}, workdir / "mine.pt")
    p = _params(weights="mine.pt")
    STEPS["prepare"].run(p)
    record = STEPS["train_dense"].run(p)
    metrics = record["summary"]
    assert metrics["epochs"] == 0 and metrics["weights"]["path"] == "mine.pt"
    assert 0.0 <= metrics["test_acc"] <= 1.0
    loaded, meta = load_checkpoint(layout.dense_checkpoint(p))
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    assert meta["metrics"] == read_json(layout.metrics_file(p, "train_dense"))
    # the file's content is an input: new weights under the same name re-run the step
    assert STEPS["train_dense"].run(p)["status"] == "cached"
    torch.manual_seed(4)
    torch.save(build("lenet300100", 10, (1, 8, 8)).state_dict(), workdir / "mine.pt")
    assert STEPS["train_dense"].run(p)["status"] == "computed"


def test_safetensors_weights_read_as_they_are(workdir):
    model = _trained()
    save_file(model.state_dict(), str(workdir / "mine.safetensors"))
    state = read_state_dict(workdir / "mine.safetensors")
    assert state.keys() == model.state_dict().keys()


def test_a_pickled_module_is_refused_with_how_to_convert_it(workdir):
    torch.save(_trained(), workdir / "whole.pt")
    with pytest.raises(PruneflowError, match="needs arbitrary unpickling") as err:
        read_state_dict(workdir / "whole.pt")
    assert "state_dict()" in str(err.value) and "\n" not in str(err.value)


def test_mismatched_weights_name_keys_and_nothing_is_written(workdir):
    state = _trained().state_dict()
    state["extra.weight"] = state.pop("fc3.bias")
    state["fc1.weight"] = torch.zeros(3, 64)
    torch.save(state, workdir / "wrong.pt")
    p = _params(weights="wrong.pt")
    STEPS["prepare"].run(p)
    with pytest.raises(PruneflowError) as err:
        STEPS["train_dense"].run(p)
    text = str(err.value)
    assert "missing 1 (first: fc3.bias)" in text and "unexpected 1 (first: extra.weight)" in text
    assert "fc1.weight (3, 64) vs (300, 64)" in text
    assert not layout.dense_checkpoint(p).exists()
    assert not layout.metrics_file(p, "train_dense").exists()


def test_a_missing_weights_file_is_one_line(workdir):
    p = _params(weights="nowhere.pt")
    STEPS["prepare"].run(p)
    with pytest.raises(PruneflowError, match="model.weights: no file nowhere.pt"):
        STEPS["train_dense"].run(p)


def test_spdy_weights_apply_to_their_model_only():
    p = config.from_dict(
        {"spdy": {"models": ["smallcnn", "mlp1024"], "weights": {"smallcnn": "w.safetensors"}}}
    )
    assert config.scoped(p, "spdy:smallcnn").model.weights == "w.safetensors"
    assert config.scoped(p, "spdy:mlp1024").model.weights is None
    with pytest.raises(PruneflowError, match="weights given for"):
        config.from_dict({"spdy": {"models": ["smallcnn"], "weights": {"mlp1024": "w.pt"}}})
