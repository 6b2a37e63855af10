"""DVC: the stages in dvc.yaml agree with the steps, and `dvc repro` caches like the flows do."""

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pruneflow.config import Params, scoped, scoped_source
from pruneflow.steps import STEPS

REPO = Path(__file__).resolve().parent.parent
BIN = str(Path(sys.executable).parent)


def _expanded_stages() -> list[tuple[str, dict, dict]]:
    """(stage name, stage definition, template variables) with foreach stages expanded."""
    params = Params()
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in stages.items():
        if "foreach" in stage:
            items = params.get(stage["foreach"].strip("${}"))
            out += [(f"{name}@{item}", stage["do"], {"item": item}) for item in items]
        elif "matrix" in stage:
            axes = {k: params.get(v.strip("${}")) for k, v in stage["matrix"].items()}
            for combo in itertools.product(*axes.values()):
                variables = {f"item.{k}": v for k, v in zip(axes, combo, strict=True)}
                label = "-".join(str(v) for v in combo)
                out.append((f"{name}@{label}", stage, variables))
        else:
            out.append((name, stage, {}))
    return out


def _resolve(text: str, variables: dict) -> str:
    def value(match: re.Match) -> str:
        key = match.group(1)
        return str(variables[key] if key in variables else Params().get(key))

    return re.sub(r"\$\{([^}]+)\}", value, text)


def _paths(entries: list, variables: dict) -> set[str]:
    return {_resolve(e if isinstance(e, str) else next(iter(e)), variables) for e in entries}


@pytest.mark.parametrize(("name", "stage", "variables"), _expanded_stages())
def test_stage_matches_step_declaration(name, stage, variables):
    cmd = _resolve(stage["cmd"], variables).split()
    assert cmd[:2] == ["pruneflow", "stage"], name
    step = STEPS[cmd[2]]
    scope = cmd[cmd.index("--scope") + 1] if "--scope" in cmd else None
    params = scoped(Params(), scope)
    expected = {scoped_source(scope, key) for key in step.reads} - {None}
    deps = _paths(stage["deps"], variables)
    written = set().union(
        *(_paths(stage.get(kind, []), variables) for kind in ("outs", "metrics", "plots"))
    )
    if "--item" in cmd:  # one item of a fan-out step (a matrix stage)
        pairs = [cmd[i + 1].partition("=") for i, word in enumerate(cmd) if word == "--item"]
        item = {key: yaml.safe_load(value) for key, _, value in pairs}
        assert item in step.items(params), name
        listed = set(stage["params"])
        assert all(any(r == k or r.startswith(k + ".") for r in expected) for k in listed), name
        assert all(any(r == k or r.startswith(k + ".") for k in listed) for r in expected), name
        assert written == {str(p) for p in step.output_paths(params, item)} or all(
            any(str(p).startswith(out + "/") for out in written)
            for p in step.output_paths(params, item)
        ), name
        for path in map(str, step.input_paths(params, item)):
            assert any(path == d or path.startswith(d + "/") for d in deps), (name, path)
        return
    if step.fan_out:
        # every item's files lie in the stage's output folders; the items come from these keys
        listed = set(stage["params"])
        # a listed section ("spdy.recon") covers every key under it
        uncovered = {
            k for k in expected if not any(k == x or k.startswith(x + ".") for x in listed)
        }
        assert not uncovered, (name, uncovered)
        # the code it runs: a listed folder covers the files in it
        assert all(any(c == d or c.startswith(d + "/") for d in deps) for c in step.code), name
        for item in step.items(params):
            for path in step.output_paths(params, item):
                assert any(str(path).startswith(out + "/") for out in written), (name, path)
            for path in step.input_paths(params, item):
                assert any(str(path) == d or str(path).startswith(d + "/") for d in deps) or any(
                    str(path).startswith(out + "/") for out in written
                ), (name, path)
        return
    assert sorted(stage["params"]) == sorted(expected), name
    assert set(step.code) <= deps, name
    for path in map(str, step.input_paths(params)):
        assert any(path == d or path.startswith(d + "/") for d in deps), (name, path)
    assert written == {str(p) for p in step.output_paths(params)}, name


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

    _dvc(tmp_path, "repro", "train_dense")
    first = _lock(tmp_path)
    assert set(first) == {"prepare", "train_dense"}
    metrics = json.loads((tmp_path / "metrics/train_dense/digits-lenet300100.json").read_text())
    assert metrics["epochs"] == 3
    ckpt = tmp_path / "artifacts/models/digits/lenet300100/dense.safetensors"
    mtime = ckpt.stat().st_mtime_ns

    _dvc(tmp_path, "repro", "train_dense")
    assert _lock(tmp_path) == first and ckpt.stat().st_mtime_ns == mtime
    assert json.loads(_dvc(tmp_path, "status", "--json", "train_dense").stdout or "{}") == {}

    tree["noise"]["rate"] = 0.3
    params_file.write_text(yaml.safe_dump(tree))
    _dvc(tmp_path, "repro", "train_dense")
    second = _lock(tmp_path)
    for stage in ("prepare", "train_dense"):
        assert second[stage]["outs"] != first[stage]["outs"], stage
    assert second["train_dense"]["params"]["params.yaml"]["train.epochs"] == 3
