"""Sparse double descent and DVC: dvc.yaml's sdd stages declare exactly what the steps write,
for every ``sdd.modes``; the CSV exports render with ``dvc plots show``."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_sdd_sweep import _params

from pruneflow import config
from pruneflow.config import Params
from pruneflow.io import parquet_metadata
from pruneflow.sdd import exports
from pruneflow.sdd.sweep import LOTTERY_COLUMNS
from pruneflow.steps import STEPS
from pruneflow.steps.sdd import curve_files, lottery_file, plot_files, run_sweep

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SDD_STAGES = ("sdd_dense", "sdd_levels", "sdd_sweep", "sdd_plots")


def _stage(name: str) -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]


def _declared(name: str, params: Params, model: str) -> tuple[str, set[str]]:
    """(step name, the files the stage declares: outs, metrics, plots) resolved for ``params``."""
    body = _stage(name)["do"]

    def resolve(text: str) -> str:
        return re.sub(
            r"\$\{([^}]+)\}",
            lambda m: str(model if m.group(1) == "item" else params.get(m.group(1))),
            text,
        )

    written = set()
    for kind in ("outs", "metrics", "plots"):
        for entry in body.get(kind, []):
            written.add(resolve(entry if isinstance(entry, str) else next(iter(entry))))
    return resolve(body["cmd"]).split()[2], written


def _tiny(**sdd) -> Params:
    return _params(**{"final_sparsity": 0.8, **sdd})  # levels 1-3


@pytest.mark.parametrize(
    "modes",
    [["rewind"], ["finetune"], ["rewind", "reinit"], ["finetune", "rewind", "reinit"]],
)
@pytest.mark.parametrize("methods", [["magnitude"], ["magnitude", "random"]])
def test_declared_outputs_are_the_steps_outputs_for_every_mode(modes, methods):
    params = config.updated(sdd={"modes": modes, "methods": methods, "seeds": [0, 3]})
    for model in params.sdd.models:
        view = config.scoped(params, f"sdd:{model}")
        for name in ("sdd_sweep", "sdd_plots"):
            step, written = _declared(name, params, model)
            assert written == {str(p) for p in STEPS[step].output_paths(view)}, (name, modes)
        # the fan-out steps: every item's files lie in the stage's output folders
        for name in ("sdd_dense", "sdd_levels"):
            step, written = _declared(name, params, model)
            for item in STEPS[step].items(view):
                for path in STEPS[step].output_paths(view, item):
                    assert any(str(path).startswith(out + "/") for out in written), (name, path)


def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    result = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_one_mode_sweep_writes_every_declared_file_and_dvc_plots_renders_the_csvs(workdir):
    # rewind without reinit: lottery.parquet and its CSV and figure exist all the same
    params = _tiny(modes=["finetune", "rewind"])
    run_sweep(params)
    view = config.scoped(params, "sdd:lenet300100")
    for name in ("sdd_sweep", "sdd_plots"):
        _, written = _declared(name, params, "lenet300100")
        assert all(Path(path).is_file() for path in written), name

    lottery = pd.read_parquet(lottery_file(view))
    assert list(lottery.columns) == [*LOTTERY_COLUMNS, "rewind_phase", "reinit_phase"]
    assert lottery["level"].tolist() == [0, 1, 2, 3]  # dense, 50 %, 75 %, 87.5 %
    assert lottery["rewind_test_acc"].notna().all() and lottery["reinit_test_acc"].isna().all()
    assert lottery["reinit_minus_rewind"].isna().all() and (lottery["reinit_phase"] == "").all()
    assert parquet_metadata(lottery_file(view))["modes"] == ["rewind"]
    assert plot_files(view)["lottery"].read_bytes()[:4] == b"\x89PNG"

    csvs = {name: pd.read_csv(path) for name, path in curve_files(view).items()}
    curves = {"magnitude/finetune/seed0", "magnitude/rewind/seed0"}
    assert set(csvs["test_acc"]["curve"]) == curves
    assert set(csvs["learning_distance"]["curve"]) == curves
    assert set(csvs["train_acc"]["curve"]) == {
        f"{c} {labels} labels" for c in curves for labels in ("noisy", "true")
    }
    assert set(csvs["lottery"]["curve"]) == {"magnitude rewind"}
    rewind = csvs["test_acc"][csvs["test_acc"]["curve"] == "magnitude/rewind/seed0"]
    assert rewind["sparsity_nines"].tolist() == pytest.approx(
        [0.0, 0.30103, 0.60206, 0.90309], abs=1e-4
    )  # -log10(1 - sparsity): sparsity 0, 0.5, 0.75, 0.875
    assert rewind["test_acc"].tolist() == pytest.approx(lottery["rewind_test_acc"].tolist())

    # a DVC project holding just the sdd stages, these params and the files just written
    stages = {name: _stage(name) for name in ("sdd_prepare", *SDD_STAGES)}
    Path("dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    Path("params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    template = Path(exports.TEMPLATE.relative_to(REPO))
    template.parent.mkdir(parents=True)
    shutil.copy(exports.TEMPLATE, template)
    _dvc(workdir, "init", "--no-scm", "-q")
    shutil.copy(REPO / ".dvc/config", ".dvc/config")
    targets = [str(p) for p in curve_files(view).values()]
    shown = json.loads(_dvc(workdir, "plots", "show", "--json", *targets).stdout)
    assert not shown.get("errors"), shown["errors"]
    for name, path in curve_files(view).items():
        (plot,) = shown["data"][str(path)]
        spec = plot["content"]
        assert plot["type"] == "vega" and spec["encoding"]["color"]["field"] == "curve"
        assert spec["encoding"]["x"]["field"] == "sparsity_nines"
        assert "lenet300100" in spec["title"]
        points = spec["data"]["values"]
        assert {row["curve"] for row in points} == set(csvs[name]["curve"]), name
        y = spec["encoding"]["y"]["field"]
        assert sorted(float(row[y]) for row in points) == pytest.approx(
            sorted(csvs[name][y].tolist())
        )
