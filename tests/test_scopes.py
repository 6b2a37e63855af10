from pathlib import Path

import pytest

from pruneflow import config
from pruneflow.errors import PruneflowError


def test_scoped_params_take_the_method_section():
    p = config.load(
        Path(__file__).resolve().parent.parent / "presets/full.yaml"
    )  # two SPDY models: the scope picks the second
    q = config.scoped(p, "spdy:mlp1024")
    assert (q.data.dataset, q.noise.rate, q.model.name) == ("mnist5k", 0.0, "mlp1024")
    assert q.train == p.spdy.train and q.data.root == p.data.root
    data_only = config.scoped(p, "spdy")
    assert data_only.data.dataset == "mnist5k" and data_only.model == p.model
    assert config.scoped(p, None) is p


def test_scope_errors():
    with pytest.raises(PruneflowError, match="scope must be"):
        config.scoped(config.Params(), "nosuch:foo")
    with pytest.raises(PruneflowError, match="not one of them"):
        config.scoped(config.Params(), "spdy:lenet300100")


def test_scoped_source_keys():
    assert config.scoped_source("spdy:smallcnn", "train.lr") == "spdy.train"
    assert config.scoped_source("spdy:smallcnn", "model.name") is None
    assert config.scoped_source("spdy", "data.dataset") == "spdy.dataset"
    assert config.scoped_source("spdy", "noise.kind") == "noise.kind"
    assert config.scoped_source(None, "train.lr") == "train.lr"


def test_a_spdy_model_view_takes_its_own_targets():
    from pruneflow import config

    p = config.updated(
        spdy={
            "models": ["smallcnn", "mlp1024"],
            "targets": [1.5, 2.0],
            "model_targets": {"mlp1024": [10.0, 20.0]},
        }
    )
    assert config.scoped(p, "spdy:mlp1024").spdy.targets == [10.0, 20.0]
    assert config.scoped(p, "spdy:smallcnn").spdy.targets == [1.5, 2.0]
    with pytest.raises(PruneflowError, match="speedup targets must be > 1"):
        config.updated(spdy={"model_targets": {"mlp1024": [0.5]}})


def test_a_models_targets_may_follow_the_hosts_cpu_capability(monkeypatch):
    from pruneflow import config

    by_cpu = {"AVX512": [10.0, 15.0, 20.0], "default": [4.0, 7.0, 10.0]}
    p = config.updated(spdy={"models": ["mlp1024"], "model_targets": {"mlp1024": by_cpu}})
    assert p.spdy.targets_for("mlp1024", "AVX512") == [10.0, 15.0, 20.0]
    assert p.spdy.targets_for("mlp1024", "AVX2") == [4.0, 7.0, 10.0]  # no entry: its default
    # what an unreachable target's error tells the user to lower
    assert p.spdy.targets_key("mlp1024", "AVX512") == "spdy.model_targets.mlp1024.AVX512"
    assert p.spdy.targets_key("mlp1024", "AVX2") == "spdy.model_targets.mlp1024.default"
    assert p.spdy.targets_key("smallcnn", "AVX2") == "spdy.targets"
    monkeypatch.setattr(config, "cpu_capability", lambda: "AVX512")
    assert config.scoped(p, "spdy:mlp1024").spdy.targets == [10.0, 15.0, 20.0]
    monkeypatch.setattr(config, "cpu_capability", lambda: "AVX2")
    assert config.scoped(p, "spdy:mlp1024").spdy.targets == [4.0, 7.0, 10.0]
    # without a default, a capability not listed falls back to spdy.targets
    p = config.updated(spdy={"targets": [2.0], "model_targets": {"mlp1024": {"AVX512": [12.0]}}})
    assert p.spdy.targets_for("mlp1024", "AVX2") == [2.0]
    with pytest.raises(PruneflowError, match=r"mlp1024 \(AVX2\): speedup targets must be > 1"):
        config.updated(spdy={"model_targets": {"mlp1024": {"AVX2": [0.5]}}})
    with pytest.raises(PruneflowError, match=r"mlp1024 \(AVX2\): no targets"):
        config.updated(spdy={"model_targets": {"mlp1024": {"AVX2": []}}})
