"""Defaults once: params.yaml holds the pydantic defaults; presets are overlays on it.

presets/full.yaml (the papers' full experiments) changes exactly the documented keys of
params.yaml (the quick default of `pruneflow run`), each of them marked there;
presets/smoke.yaml makes every step tiny."""

from pathlib import Path

import pytest
import yaml

from pruneflow import config
from pruneflow.errors import PruneflowError

REPO = Path(__file__).resolve().parent.parent
FULL_ONLY = {
    "preset",
    "spdy.models",
    "spdy.train.epochs",
    "spdy.search.candidates",
    "spdy.search.max_no_improvement",
    "spdy.search.calib_samples",
    "sdd.retrain.epochs",
    "sdd.prune_fraction",
    "chex.train.epochs",
    "chex.t_max",
}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_params_yaml_holds_exactly_the_defaults():
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    defaults = config.Params().model_dump(mode="json")
    assert _flat(tree) == _flat(defaults)  # every key, each with its default value


def test_full_preset_is_an_overlay_of_just_the_keys_it_changes():
    overlay = _flat(yaml.safe_load((REPO / "presets/full.yaml").read_text()))
    assert set(overlay) == FULL_ONLY


def test_an_overlay_merges_onto_the_params_yaml_of_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(
        yaml.safe_dump({"data": {"root": "elsewhere"}, "spdy": {"train": {"lr": 0.02}}})
    )
    Path("mine.yaml").write_text(yaml.safe_dump({"spdy": {"train": {"epochs": 3}}}))
    p = config.load("mine.yaml", ["spdy.search.seed=4"])
    # sections merge key by key: the overlay's epochs beside params.yaml's lr and root
    assert (p.spdy.train.epochs, p.spdy.train.lr, p.data.root) == (3, 0.02, "elsewhere")
    assert p.spdy.search.seed == 4 and p.spdy.train.batch_size == 128  # the rest: defaults
    with pytest.raises(PruneflowError, match="mine.yaml: unknown key 'spdy.nope'"):
        Path("mine.yaml").write_text(yaml.safe_dump({"spdy": {"nope": 1}}))
        config.load("mine.yaml")


def test_smoke_preset_runs_every_step_smaller_than_the_default():
    default = config.load(REPO / "params.yaml")
    smoke = config.load(REPO / "presets/smoke.yaml")
    assert smoke.preset == "smoke"
    assert not smoke.claims and default.claims  # its one seed supports no verdict
    assert smoke.spdy.models and smoke.sdd.models and smoke.chex.models  # no method left out
    assert smoke.spdy.train.epochs < default.spdy.train.epochs
    assert smoke.sdd.retrain.epochs < default.sdd.retrain.epochs
    assert smoke.chex.train.epochs < default.chex.train.epochs
    assert smoke.spdy.search.candidates < default.spdy.search.candidates


def test_full_preset_differs_from_the_default_only_in_the_documented_keys():
    default = _flat(config.load(REPO / "params.yaml", []).model_dump(mode="json"))
    full = _flat(config.load(REPO / "presets/full.yaml", []).model_dump(mode="json"))
    assert default.keys() == full.keys()
    assert {k for k in default if default[k] != full[k]} == FULL_ONLY
    assert (default["preset"], full["preset"]) == ("default", "full")


def test_every_full_only_value_is_marked_in_params_yaml():
    text = (REPO / "params.yaml").read_text()
    # preset names itself; every other differing key carries a `full:` note on its line
    assert text.count("full:") >= len(FULL_ONLY) - 1
