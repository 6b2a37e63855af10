"""The ``pruneflow`` command end to end, as a user runs it (subprocesses)."""

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

FAST = ["--set", "train.epochs=4"]


@pytest.fixture()
def project(tmp_path, prefect_api):
    return tmp_path


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in (root / "artifacts").rglob("*") if p.is_file()}


def test_run_prints_summary_then_second_run_is_all_cached(project):
    first = run_cli("run", "dense", *FAST, cwd=project)
    assert first.returncode == 0, first.stderr
    assert "clean test" in first.stdout and "lenet300100" in first.stdout
    ckpt = project / "artifacts/models/digits/lenet300100/dense.safetensors"
    metrics = json.loads((project / "metrics/train_dense/digits-lenet300100.json").read_text())
    assert ckpt.exists() and 0.5 < metrics["test_acc"] <= 1.0
    before = _mtimes(project)
    second = run_cli("run", "dense", *FAST, cwd=project)
    assert second.returncode == 0, second.stderr
    assert _mtimes(project) == before  # nothing rewritten
    assert "all cached, nothing to do" in second.stdout
    assert "clean test" in second.stdout  # the results' tables, replayed
    # the second run was the shortcut (no pipeline loaded); an output replaced by hand is not
    assert (project / ".pruneflow/runs/shortcut-dense.json").exists()
    ckpt.unlink()
    ckpt.write_bytes(b"not a checkpoint")
    third = run_cli("run", "dense", *FAST, cwd=project)
    assert third.returncode == 0, third.stderr
    log = json.loads((project / ".pruneflow/runs/last.json").read_text())
    statuses = {r["step"]: r["status"] for r in log["records"]}
    assert statuses["train_dense"] == "restored" and ckpt.read_bytes() != b"not a checkpoint"


def test_bad_params_one_line_nonzero_exit(project):
    result = run_cli("run", "--set", "noise.rate=1.5", cwd=project)
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "noise.rate" in lines[0] and "rate < 1.0" in lines[0]
    assert not (project / "artifacts").exists()


def test_failure_inside_the_flow_is_one_line_without_traceback(project):
    result = run_cli(
        "run", "dense", "--set", "data.dataset=mnist", "--set", "data.root=nowhere", cwd=project
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    errors = [ln for ln in result.stderr.splitlines() if "error" in ln.lower()]
    assert errors == ["error: data.root nowhere does not exist (needed for data set 'mnist')"]


def test_stage_errors_are_one_line_and_leave_nothing_half_written(project):
    missing = run_cli(
        "stage", "prepare", "--set", "data.dataset=mnist", "--set", "data.root=nowhere", cwd=project
    )
    assert missing.returncode == 2 and "data.root nowhere does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = run_cli("stage", "nosuch", cwd=project)
    assert unknown.returncode == 2 and "unknown step 'nosuch'" in unknown.stderr

    assert run_cli("stage", "prepare", cwd=project).returncode == 0
    labels = project / "artifacts/data/digits/symmetric-0.2/labels.parquet"
    labels.write_bytes(labels.read_bytes()[:100])  # truncated by hand
    corrupt = run_cli("stage", "train_dense", *FAST, cwd=project)
    assert corrupt.returncode == 2 and "corrupt or truncated Parquet" in corrupt.stderr
    model_dir = project / "artifacts/models/digits/lenet300100"
    assert not model_dir.exists() or not any(model_dir.iterdir())


def test_double_descent_flow_runs_chains_and_writes_the_sweep(sdd_run):
    # `pruneflow run sdd` in a subprocess: the session's shared run (conftest.sdd_run)
    sweep = pd.read_parquet(sdd_run / "artifacts/sdd/digits-lenet300100/sweep.parquet")
    assert set(sweep["retrain"]) == {"finetune", "rewind", "reinit"} and sweep["level"].max() == 2
    assert (sdd_run / "artifacts/reports/sdd-digits-lenet300100-accuracy.png").stat().st_size > 0
