"""presets/full.yaml (the papers' full experiments) differs from params.yaml (the quick default
of `pruneflow run`) in exactly the documented keys, and each of those is marked in params.yaml."""

from pathlib import Path

from pruneflow import config

REPO = Path(__file__).resolve().parent.parent
FULL_ONLY = {
    "preset",
    "spdy.models",
    "spdy.train.epochs",
    "spdy.search.candidates",
    "spdy.search.max_no_improvement",
    "spdy.search.calib_samples",
    "spdy.gmp.seeds",
    "spdy.gmp.end_epoch",
    "spdy.gmp.finetune_epochs",
    "spdy.gmp.every_steps",
    "spdy.gmp.batch_size",
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
