"""DVC: the stages in dvc.yaml agree with the steps, and `dvc repro` caches like the flows do."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pruneflow.config import Params
from pruneflow.steps import STEPS

REPO = Path(__file__).resolve().parent.parent
BIN = str(Path(sys.executable).parent)


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _resolve(text: str, params: Params) -> str:
    for key in ("data.dataset", "model.name"):
        text = text.replace("${" + key + "}", str(params.get(key)))
    return text


@pytest.mark.parametrize("name", list(STEPS))
def test_stage_matches_step_declaration(name):
    stage, step, params = _stages()[name], STEPS[name], Params()
    assert stage["cmd"] == f"pruneflow stage {name}"
    assert sorted(stage["params"]) == sorted(step.reads)
    deps = {_resolve(d, params) for d in stage["deps"]}
    assert set(step.code) <= deps
    assert {str(p) for p in step.inputs(params)} <= deps
    outs = {
        _resolve(o if isinstance(o, str) else next(iter(o)), params) for o in stage.get("outs", [])
    }
    metrics = {
        _resolve(next(iter(m)) if isinstance(m, dict) else m, params)
        for m in stage.get("metrics", [])
    }
    assert outs | metrics == {str(p) for p in step.outputs(params)}


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _dvc(cwd, *args) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PRUNEFLOW_STATE_DIR": str(Path(cwd) / ".pruneflow"),
    }
    result = subprocess.run(
        [f"{BIN}/dvc", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _lock(cwd) -> dict:
    return yaml.safe_load((cwd / "dvc.lock").read_text())["stages"]


def test_repro_runs_once_then_nothing_then_reruns_on_param_change(tmp_path):
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in tracked:
        if (REPO / rel).is_file():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, tmp_path / rel)
    params_file = tmp_path / "params.yaml"
    tree = yaml.safe_load(params_file.read_text())
    tree["train"]["epochs"] = 3
    params_file.write_text(yaml.safe_dump(tree))
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy")

    _dvc(tmp_path, "repro")
    first = _lock(tmp_path)
    assert set(first) == {"prepare", "train_dense"}
    metrics = json.loads((tmp_path / "metrics/train_dense.json").read_text())
    assert metrics["epochs"] == 3
    ckpt = tmp_path / "artifacts/models/digits/lenet300100/dense.safetensors"
    mtime = ckpt.stat().st_mtime_ns

    _dvc(tmp_path, "repro")
    assert _lock(tmp_path) == first and ckpt.stat().st_mtime_ns == mtime
    assert json.loads(_dvc(tmp_path, "status", "--json").stdout or "{}") == {}

    tree["noise"]["rate"] = 0.3
    params_file.write_text(yaml.safe_dump(tree))
    _dvc(tmp_path, "repro")
    second = _lock(tmp_path)
    for stage in ("prepare", "train_dense"):
        assert second[stage]["outs"] != first[stage]["outs"], stage
    assert second["train_dense"]["params"]["params.yaml"]["train.epochs"] == 3
