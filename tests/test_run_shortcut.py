"""A run with nothing to do is replayed only while everything it depended on still holds."""

import subprocess
import sys
from pathlib import Path

import pytest

from pruneflow import run_shortcut
from pruneflow.io import file_hash


@pytest.fixture()
def project(workdir: Path) -> Path:
    (workdir / "flows").mkdir()
    (workdir / "tasks").mkdir()
    (workdir / "flows" / "pipeline.py").write_text("STEPS = 1\n")
    (workdir / "params.yaml").write_text("seed: 0\n")
    (workdir / "in.bin").write_bytes(b"input")
    (workdir / "out").mkdir()
    (workdir / "out" / "table.parquet").write_bytes(b"output")
    gen = workdir / ".pruneflow" / "stepcache" / "GENERATION"
    gen.parent.mkdir(parents=True)
    gen.write_text("abc123")
    return workdir


def _records() -> list[dict]:
    return [
        {
            "step": "prepare",
            "params": {"model.name": "lenet300100", "data.dataset": "digits"},
            "outputs": [{"path": "out", "hash": file_hash(Path("out"))}],
            "input_files": ["in.bin"],
            "status": "computed",
            "seconds": 3.0,
            "summary": {"rows": 1},
        }
    ]


def _facts(project: Path, *overrides: str) -> run_shortcut.Facts:
    return run_shortcut.facts("all", Path("params.yaml"), list(overrides), project)


def test_replays_while_nothing_changed_and_marks_every_step_cached(project):
    assert run_shortcut.replay(_facts(project)) is None  # no complete run yet
    assert run_shortcut.remember(_facts(project), _records(), "TABLES", ["mnist"]) is not None
    replayed = run_shortcut.replay(_facts(project))
    assert replayed is not None
    records, text = replayed
    assert [(r["step"], r["status"], r["seconds"]) for r in records] == [("prepare", "cached", 0)]
    assert records[0]["summary"] == {"rows": 1} and text == "TABLES"


@pytest.mark.parametrize(
    "change",
    [
        "output edited",
        "output deleted",
        "input edited",
        "params edited",
        "override",
        "flow code edited",
        "new module",
        "step cache cleared",
    ],
)
def test_any_change_means_the_full_run(project, change):
    run_shortcut.remember(_facts(project), _records(), "", [])
    overrides: list[str] = []
    if change == "output edited":
        (project / "out" / "table.parquet").write_bytes(b"outpuT")
    elif change == "output deleted":
        (project / "out" / "table.parquet").unlink()
    elif change == "input edited":
        (project / "in.bin").write_bytes(b"inpuT")
    elif change == "params edited":
        (project / "params.yaml").write_text("seed: 1\n")
    elif change == "override":
        overrides = ["seed=1"]
    elif change == "flow code edited":
        (project / "flows" / "pipeline.py").write_text("STEPS = 2\n")
    elif change == "new module":
        (project / "tasks" / "extra.py").write_text("")
    elif change == "step cache cleared":
        (project / ".pruneflow" / "stepcache" / "GENERATION").unlink()
    assert run_shortcut.replay(_facts(project, *overrides)) is None


def test_its_hash_is_the_one_steps_record_outputs_by(project):
    for path in (Path("in.bin"), Path("out"), Path("flows")):
        assert run_shortcut.file_digest(path) == file_hash(path)
    assert run_shortcut.file_digest(Path("missing")) is None


def test_an_output_changed_since_its_step_recorded_it_is_not_recorded(project):
    (project / "out" / "table.parquet").write_bytes(b"edited during the run")
    assert run_shortcut.remember(_facts(project), _records_with_old_hash(), "", []) is None
    assert run_shortcut.replay(_facts(project)) is None


def _records_with_old_hash() -> list[dict]:
    records = _records()
    records[0]["outputs"] = [{"path": "out", "hash": "0" * 32}]
    return records


def test_runs_reading_user_code_or_on_disk_data_are_never_recorded(project):
    run_shortcut.remember(_facts(project), _records(), "", [])
    user_model = [{**_records()[0], "params": {"model.name": "mymodels.nets:build"}}]
    assert run_shortcut.remember(_facts(project), user_model, "", []) is None
    assert run_shortcut.replay(_facts(project)) is None  # the earlier record went too
    on_disk = [{**_records()[0], "params": {"data.dataset": "mnist", "data.root": "data"}}]
    assert run_shortcut.remember(_facts(project), on_disk, "", ["mnist"]) is None
    no_inputs = [{k: v for k, v in _records()[0].items() if k != "input_files"}]
    assert run_shortcut.remember(_facts(project), no_inputs, "", []) is None


def test_the_check_imports_no_torch_pandas_or_prefect():
    code = (
        "import sys, pruneflow.cli, pruneflow.run_shortcut, pruneflow.run_summary; "
        "print(sorted(m for m in ('torch', 'pandas', 'prefect', 'scipy', 'pruneflow.config') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
