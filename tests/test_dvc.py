"""DVC: dvc.yaml is the one generated from the steps, and `dvc repro` caches like the flows do."""

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

from pruneflow import dvcgen
from pruneflow.config import Params, scoped, scoped_source
from pruneflow.steps import STEPS

REPO = Path(__file__).resolve().parent.parent
BIN = str(Path(sys.executable).parent)


def _expanded_stages(params: Params | None = None) -> list[tuple[str, dict, dict]]:
    """(stage name, stage definition, template variables) with foreach stages expanded."""
    params = params or Params()
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


def _resolve(text: str, variables: dict, params: Params | None = None) -> str:
    def value(match: re.Match) -> str:
        key = match.group(1)
        return str(variables[key] if key in variables else (params or Params()).get(key))

    return re.sub(r"\$\{([^}]+)\}", value, text)


def _paths(entries: list, variables: dict, params: Params | None = None) -> set[str]:
    return {
        _resolve(e if isinstance(e, str) else next(iter(e)), variables, params) for e in entries
    }


def test_committed_dvc_yaml_is_the_generated_one():
    assert (REPO / "dvc.yaml").read_text() == dvcgen.render(), "run `pruneflow dvc-yaml`"


def test_check_mode_names_a_stale_file_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from pruneflow.cli import app

    path = tmp_path / "dvc.yaml"
    runner = CliRunner()
    assert runner.invoke(app, ["dvc-yaml", "--out", str(path)]).exit_code == 0
    assert runner.invoke(app, ["dvc-yaml", "--check", "--out", str(path)]).exit_code == 0
    path.write_text(path.read_text().replace("pruneflow stage prepare", "pruneflow stage x", 1))
    stale = runner.invoke(app, ["dvc-yaml", "--check", "--out", str(path)])
    assert stale.exit_code == 1 and len(stale.output.strip().splitlines()) == 1, stale.output
    assert "stale" in stale.output


def _full_models(params: Params) -> Params:
    """``params`` with the full preset's SPDY models (two: each stage is one of several)."""
    return params.model_copy(
        update={"spdy": params.spdy.model_copy(update={"models": ["smallcnn", "mlp1024"]})}
    )


@pytest.mark.parametrize("params", [Params(), _full_models(Params())], ids=["default", "full"])
def test_every_stage_declares_what_its_step_reads_and_writes(params):
    # resolved for real params: every file a step writes is an output of its stage (or lies in
    # one of its output folders), every file it reads a dependency, every key it reads a param
    for name, stage, variables in _expanded_stages(params):
        cmd = _resolve(stage["cmd"], variables, params).split()
        step = STEPS[cmd[2]]
        scope = cmd[cmd.index("--scope") + 1] if "--scope" in cmd else None
        view = scoped(params, scope)
        pairs = [cmd[i + 1].partition("=") for i, word in enumerate(cmd) if word == "--item"]
        item = {key: yaml.safe_load(value) for key, _, value in pairs} or None
        if step.fan_out:
            assert item is None or item in step.items(view), name
            items = [item] if item else step.items(view)
        else:
            items = [None]
        deps = _paths(stage["deps"], variables, params)
        written = set().union(
            *(_paths(stage.get(k, []), variables, params) for k in ("outs", "metrics", "plots"))
        )
        listed = set(stage["params"])
        for key in {scoped_source(scope, k) for k in step.reads} - {None}:
            assert any(key == x or key.startswith(x + ".") for x in listed), (name, key)
        assert all(any(c == d or c.startswith(d + "/") for d in deps) for c in step.code_files()), (
            name
        )
        for it in items:
            for path in map(str, step.output_paths(view, it)):
                assert any(path == o or path.startswith(o + "/") for o in written), (name, path)
            for path in map(str, step.input_paths(view, it)):
                assert any(path == d or path.startswith(d + "/") for d in deps | written), (
                    name,
                    path,
                )


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


def copy_project(dest: Path) -> None:
    """The project's files as a fresh clone has them (tracked, plus new files not ignored)."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)


def commit_all(cwd: Path, message: str) -> None:
    _git(cwd, "add", "-A")
    _git(cwd, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message)


def test_repro_runs_once_then_nothing_then_reruns_on_param_change(tmp_path):
    copy_project(tmp_path)
    params_file = tmp_path / "params.yaml"
    tree = yaml.safe_load(params_file.read_text())
    tree["train"]["epochs"] = 3
    params_file.write_text(yaml.safe_dump(tree))
    _git(tmp_path, "init", "-q")
    commit_all(tmp_path, "copy")

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


def _declared_outputs(params: Params) -> set[str]:
    """Every file or folder some stage writes (outs, metrics, plots) under ``params``."""
    return set().union(
        *(
            _paths(stage.get(kind, []), variables, params)
            for _, stage, variables in _expanded_stages(params)
            for kind in ("outs", "metrics", "plots")
        )
    )


def test_every_step_runs_in_some_stage():
    commands = {_resolve(stage["cmd"], v).split()[2] for _, stage, v in _expanded_stages()}
    assert commands == set(STEPS)


def test_each_method_declares_its_headline_metrics_uncached():
    metrics = {
        name.partition("@")[0]: stage["metrics"]
        for name, stage, _ in _expanded_stages()
        if "metrics" in stage
    }
    for stage in ("spdy_results", "sdd_sweep", "chex_report", "train_dense"):
        (entry,) = metrics[stage]
        assert isinstance(entry, dict) and next(iter(entry.values())) == {"cache": False}, stage


def test_artifacts_name_stage_outputs():
    from dvc.repo.artifacts import check_name_format

    artifacts = yaml.safe_load((REPO / "dvc.yaml").read_text())["artifacts"]
    # the SPDY models of the quick default and of the full settings
    written = _declared_outputs(_full_models(Params()))
    kinds = {}
    for name, spec in artifacts.items():
        check_name_format(name)  # raises on a name DVC would refuse
        assert spec["type"] in ("model", "dataset"), name
        assert spec["desc"].strip() and spec["labels"], name
        path = spec["path"]
        # the path is an output, or the folder of a stage's outputs (a database's index + layers)
        assert path in written or any(out.startswith(path + "/") for out in written), name
        kinds.setdefault(spec["type"], set()).add(path.split("/")[1])
    # dense checkpoints, reconstruction databases, timing tables
    assert kinds["model"] >= {"models"} and kinds["dataset"] >= {"recondb", "timing"}


def test_dvc_reads_the_graph_and_the_artifacts(tmp_path):
    copy_project(tmp_path)
    _git(tmp_path, "init", "-q")
    dot = _dvc(tmp_path, "dag", "--dot").stdout
    edges = set(re.findall(r'"([^"]+)" -> "([^"]+)"', dot))
    tree = yaml.safe_load((tmp_path / "params.yaml").read_text())
    spdy, sdd, chex = tree["spdy"], tree["sdd"]["models"][0], tree["chex"]["models"][0]
    m = spdy["models"][0]
    run = f"gmp@{m}"
    for edge in [
        ("spdy_prepare", f"spdy_train_dense@{m}"),
        (f"spdy_train_dense@{m}", f"recondb_layers@{m}"),
        (f"recondb_layers@{m}", f"recondb@{m}"),
        (f"recondb@{m}", f"spdy@{m}"),
        (f"profile@{m}", f"spdy@{m}"),
        (f"spdy@{m}", f"spdy_oneshot@{m}"),
        (f"spdy_oneshot@{m}", run),
        (f"spdy_oneshot@{m}", f"spdy_results@{m}"),
        (run, f"spdy_results@{m}"),
        (f"sdd_dense@{sdd}", f"sdd_levels@{sdd}"),
        (f"sdd_levels@{sdd}", f"sdd_sweep@{sdd}"),
        (f"sdd_sweep@{sdd}", f"sdd_plots@{sdd}"),
        (f"chex_train@{chex}", f"chex_extract@{chex}"),
        (f"chex_compare@{chex}", f"chex_report@{chex}"),
        (f"spdy_results@{m}", "report"),
        (f"sdd_sweep@{sdd}", "report"),
        (f"chex_report@{chex}", "report"),
    ]:
        assert edge in edges, edge

    from dvc.repo import Repo

    with Repo(str(tmp_path)) as repo:  # DVC's own loader and schema for `artifacts:`
        (loaded,) = repo.artifacts.read().values()
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["artifacts"]
    assert {name: a.path for name, a in loaded.items()} == {
        name: spec["path"] for name, spec in declared.items()
    }
