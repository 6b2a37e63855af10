"""`pruneflow run` refuses the user's bad models, weights, patterns and data in one line,
before any step runs and without writing anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pruneflow.cli import app
from pruneflow.models import build

REPO = Path(__file__).resolve().parent.parent
USER = "tests.user_models.branchy"


@pytest.fixture()
def project(workdir, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    torch.manual_seed(0)
    state = build("smallcnn", 10, (1, 8, 8)).state_dict()
    state["fc9.weight"] = state.pop("fc2.weight")
    torch.save(state, workdir / "wrong.pt")
    return workdir


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            [f"spdy.models=[{USER}x:make]"],
            f"{USER}x:make: cannot import {USER}x (ModuleNotFoundError",
        ),
        ([f"spdy.models=[{USER}:raises]"], f"{USER}:raises raised RuntimeError: out of widgets"),
        (
            ["spdy.weights={smallcnn: wrong.pt}"],
            "wrong.pt does not fit model smallcnn: missing 1 (first: fc2.weight); "
            "unexpected 1 (first: fc9.weight)",
        ),
        ([f"spdy.models=[{USER}:no_layers]"], "has no prunable (Conv2d/Linear) layers"),
        (['spdy.grid.include=["conv9*"]'], "include pattern 'conv9*' matches none of smallcnn"),
        (
            ["spdy.dataset=tests.user_models.data:lists"],
            "tests.user_models.data:lists: the train set is a list, not a torch Dataset",
        ),
    ],
)
def test_bad_own_inputs_stop_the_run_in_one_line(project, sets, message):
    args = ["run", "spdy", "--set", "spdy.dataset=digits", "--set", "spdy.models=[smallcnn]"]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (project / "artifacts").exists() and not (project / ".pruneflow").exists()


@pytest.mark.parametrize(
    ("flow", "sets", "message"),
    [
        ("sdd", ['sdd.exclude=["conv*"]'], "exclude pattern 'conv*' matches none of lenet300100"),
        (
            "sdd",
            ["sdd.weights={lenet300100: wrong.pt}"],
            "wrong.pt does not fit model lenet300100: missing",
        ),
        ("chex", ['chex.include=["fc"]'], "chex.include pattern 'fc' matches none of resnet_mini"),
        ("chex", ["chex.weights={resnet_mini: wrong.pt}"], "wrong.pt does not fit model"),
    ],
)
def test_bad_sdd_and_chex_inputs_stop_the_run_in_one_line(project, flow, sets, message):
    args = ["run", flow, "--set", f"{flow}.dataset=digits"]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (project / "artifacts").exists() and not (project / ".pruneflow").exists()


def test_every_flow_the_cli_runs_has_its_inputs_checked():
    """`pruneflow run FLOW` checks FLOW's models before any work: a flow missing from the
    preflight's table would stop every run of it with "unknown flow"."""
    from pruneflow import config
    from pruneflow.deploy import FLOWS
    from pruneflow.models.preflight import FLOW_METHODS, check_own_inputs

    assert set(FLOW_METHODS) == set(FLOWS)
    params = config.load(REPO / "params.yaml")
    for flow in FLOWS:
        assert check_own_inputs(params, flow) == 0  # the zoo's models: nothing of the user's
