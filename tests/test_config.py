from pathlib import Path

import pytest
import yaml
from test_presets import FULL_ONLY, _flat

from pruneflow import config
from pruneflow.errors import PruneflowError

REPO = Path(__file__).resolve().parent.parent


def _keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _keys(value, f"{prefix}{key}.")
    return keys


def test_repo_params_file_is_valid_and_complete():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    defaults = config.Params().model_dump(mode="json")
    # the shipped file spells out every knob, so a user sees all of them
    assert _keys(raw) == _keys(defaults)
    # and its values are the defaults, except the quick run's (the full preset's are marked)
    loaded = _flat(config.load(REPO / "params.yaml").model_dump(mode="json"))
    differ = {k for k, v in _flat(defaults).items() if loaded[k] != v}
    assert differ <= FULL_ONLY


def test_overrides_are_typed_and_dotted():
    params = config.load(REPO / "params.yaml", ["noise.rate=0.3", "train.epochs=3"])
    assert params.noise.rate == 0.3 and params.train.epochs == 3
    assert params.get("train.epochs") == 3


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        (
            "noise.rate=1.5",
            "noise.rate = 1.5: Input should be less than 1 (allowed: 0.0 <= rate < 1.0)",
        ),
        ("train.epochs=-1", "train.epochs = -1"),
        ("noise.colour=red", "unknown key 'noise.colour' (allowed here: rate, kind, seed)"),
        ("model.name=vgg99", "'lenet300100'"),
        ("noise.kind=sideways", "'symmetric' or 'asymmetric'"),
        ("orchestration.server=ftp://x", "orchestration.server"),
        ("spdy.gmp.measure_passes=200", "measure_passes (200) must not exceed measure_repeats"),
        ("spdy.timing.rounds=0", "spdy.timing.rounds = 0"),
        ("spdy.timing.smooth_window=0", "spdy.timing.smooth_window = 0"),
        ("spdy.timing.max_rounds=1", "max_rounds (1) must be >= rounds (2)"),
        ("spdy.timing.min_seconds=-5", "spdy.timing.min_seconds = -5"),
        ("spdy.grid.model_min_sparsity={mlp1024: 0.995}", "model_min_sparsity of mlp1024"),
        ("spdy.grid.model_min_sparsity={vgg99: 0.1}", "spdy.grid.model_min_sparsity.vgg99"),
    ],
)
def test_bad_values_name_the_key_in_one_line(override, needle):
    with pytest.raises(PruneflowError) as err:
        config.load(REPO / "params.yaml", [override])
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(PruneflowError, match="not valid YAML"):
        config.load(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(PruneflowError, match="expected a mapping"):
        config.load(bad)
    with pytest.raises(PruneflowError, match="does not exist"):
        config.load(tmp_path / "other.yaml")
    with pytest.raises(PruneflowError, match="dotted.key=value"):
        config.load(REPO / "params.yaml", ["noequals"])


def test_yaml_on_off_spellings_of_progress_are_accepted(tmp_path):
    (tmp_path / "none.yaml").write_text("{}\n")
    # YAML reads an unquoted `off` as False: `--set runtime.progress=off` must still work
    assert config.load(tmp_path / "none.yaml", ["runtime.progress=off"]).runtime.progress == "off"
    assert config.load(tmp_path / "none.yaml", ["runtime.progress=on"]).runtime.progress == "on"


def test_a_model_can_have_its_own_grid_floor():
    from pruneflow.steps.timing import grid_levels

    params = config.load(REPO / "params.yaml", ["spdy.models=[smallcnn,mlp1024]"])
    grid = params.spdy.grid
    assert grid.min_sparsity_for("smallcnn") == grid.min_sparsity == 0.4
    assert grid.min_sparsity_for("mlp1024") == 0.1
    mlp = grid_levels(config.scoped(params, "spdy:mlp1024"))
    cnn = grid_levels(config.scoped(params, "spdy:smallcnn"))
    assert mlp[:2] == [0.0, 0.1] and cnn[:2] == [0.0, 0.4]
    assert len(mlp) == len(cnn) and mlp[-1] == cnn[-1] == grid.max_sparsity
    # an empty mapping: every model on the common grid
    none = config.load(REPO / "params.yaml", ["spdy.grid.model_min_sparsity={}"]).spdy.grid
    assert none.min_sparsity_for("mlp1024") == 0.4
