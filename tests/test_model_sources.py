"""Models beyond the zoo: torchvision by name and the user's own factory; path-safe names;
which layers are pruned (include/exclude) and `pruneflow layers`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pruneflow import config, layout
from pruneflow.cli import app
from pruneflow.errors import PruneflowError
from pruneflow.models import build, prunable_layers
from pruneflow.models.layers import layer_table
from pruneflow.models.sources import model_source_file, path_name
from pruneflow.sparsity.grid import skipped_layers

USER = "tests.user_models.branchy"
REPO = Path(__file__).resolve().parent.parent


def test_torchvision_model_by_name_takes_the_input_channels():
    model = build("torchvision:resnet18", 3, (1, 16, 16))
    assert model.conv1.in_channels == 1
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 3)
    assert len(prunable_layers(model)) == 21


def test_user_factory_is_called_with_num_classes_and_in_shape(monkeypatch):
    monkeypatch.chdir(REPO)
    model = build(f"{USER}:make", 5, (3, 12, 12))
    assert model(torch.randn(2, 3, 12, 12)).shape == (2, 5)
    assert build(f"{USER}:make_fixed", 2, (3, 16, 16))(torch.randn(1, 3, 16, 16)).shape == (1, 2)
    assert model_source_file(f"{USER}:make") == REPO / "tests" / "user_models" / "branchy.py"
    assert model_source_file("smallcnn") is None
    assert model_source_file("torchvision:resnet18") is None


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tests.user_models.missing:make", "tests.user_models.missing:make: cannot import"),
        (f"{USER}:nothing", "has no attribute 'nothing'"),
        (f"{USER}:raises", f"{USER}:raises raised RuntimeError: out of widgets"),
        (f"{USER}:not_a_module", "returned a dict, not a torch.nn.Module"),
        ("torchvision:no_such_net", "torchvision has no classification model 'no_such_net'"),
    ],
)
def test_bad_model_sources_are_one_line_errors(monkeypatch, name, message):
    monkeypatch.chdir(REPO)
    with pytest.raises(PruneflowError, match=message) as err:
        build(name, 2, (3, 8, 8))
    assert "\n" not in str(err.value)


def test_model_names_are_validated_and_made_path_safe():
    with pytest.raises(PruneflowError, match="model.name = 'no such'"):
        config.from_dict({"model": {"name": "no such"}})
    p = config.from_dict(
        {"model": {"name": "torchvision:resnet18"}, "data": {"dataset": "my_pkg.data:sets"}}
    )
    assert layout.model_dir(p) == Path("artifacts/models/my_pkg.data-sets/torchvision-resnet18")
    assert path_name("smallcnn") == "smallcnn"
    assert path_name("my_pkg.models:make") == "my_pkg.models-make"
    # zoo models keep their folders
    assert layout.model_dir(config.Params()) == Path("artifacts/models/digits/lenet300100")


def test_include_exclude_select_layers_and_typos_are_errors():
    names = ["conv1", "layer1.conv1", "layer1.conv2", "layer2.conv1", "fc"]
    assert skipped_layers("m", names) == ["conv1", "fc"]
    assert skipped_layers("m", names, include=["layer1.*"]) == ["conv1", "layer2.conv1", "fc"]
    assert skipped_layers("m", names, exclude=["*conv2"]) == ["conv1", "layer1.conv2", "fc"]
    with pytest.raises(PruneflowError, match="include pattern 'layer9.*' matches none"):
        skipped_layers("m", names, include=["layer9.*"])
    with pytest.raises(PruneflowError, match="exclude pattern 'x' matches none"):
        skipped_layers("m", names, exclude=["x"])
    with pytest.raises(PruneflowError, match="leave no layer of m to prune"):
        skipped_layers("m", names, include=["layer1.*"], exclude=["layer1.*"])


def test_a_model_without_prunable_layers_is_refused(monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(PruneflowError, match="no prunable"):
        prunable_layers(build(f"{USER}:no_layers", 2, (3, 8, 8)))


def test_layer_table_marks_the_pruned_layers(monkeypatch):
    monkeypatch.chdir(REPO)
    rows = layer_table(build(f"{USER}:make", 2, (3, 8, 8)), "user", exclude=["right"])
    assert [(r.name, r.pruned) for r in rows] == [
        ("stem", False),
        ("left", True),
        ("right", False),
        ("merge", True),
        ("head.0", True),
        ("head.2", False),
    ]
    assert rows[1].shape == (8, 8, 3, 3) and rows[1].weights == 576


def test_layers_command_lists_a_user_model(monkeypatch):
    monkeypatch.chdir(REPO)
    runner = CliRunner()
    args = ["layers", "-m", f"{USER}:make", "--set", "spdy.dataset=digits"]
    done = runner.invoke(app, [*args, "--set", 'spdy.grid.exclude=["left"]'])
    assert done.exit_code == 0, done.output
    assert "merge" in done.stdout and "3 of 6 prunable layers pruned" in done.stdout
    bad = runner.invoke(app, [*args, "--set", 'spdy.grid.include=["nope*"]'])
    assert bad.exit_code == 2 and "include pattern 'nope*' matches none" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_layers_command_shows_each_methods_rule(monkeypatch):
    monkeypatch.chdir(REPO)
    runner = CliRunner()
    sdd = ["layers", "--method", "sdd", "-m", "lenet300100", "--set", "sdd.dataset=digits"]
    done = runner.invoke(app, [*sdd, "--set", 'sdd.exclude=["fc3"]'])
    assert done.exit_code == 0, done.output
    assert "2 of 3 prunable layers pruned" in done.stdout  # SDD prunes the first and last too
    chex = ["layers", "--method", "chex", "-m", "resnet_mini", "--set", "chex.dataset=digits"]
    done = runner.invoke(app, [*chex, "--set", 'chex.include=["stage2.*"]'])
    assert done.exit_code == 0, done.output
    # stage2's two channel groups: its convs and the shortcut that meets conv2 in the sum
    assert "3 of 10 prunable layers pruned" in done.stdout
    bad = runner.invoke(app, [*chex, "--set", 'chex.exclude=["fc"]'])
    assert bad.exit_code == 2 and "chex.exclude pattern 'fc' matches none" in bad.stderr
