"""DVC on a tiny copy of the project: `dvc metrics show` and `dvc plots show` on the steps'
real outputs, `dvc exp run -S spdy.targets=[2.0]`, and a local remote a colleague pulls from.

The module builds one project copy (git + DVC) whose SPDY, double-descent and CHEX outputs
the steps compute in this process, on digits and tiny settings, exactly as `pruneflow stage`
would; `dvc commit` records them in dvc.lock. Starting one `pruneflow stage` process per stage
would cost seconds each for importing torch alone.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_dvc import _dvc, _git, _lock, commit_all, copy_project
from tiny_params import CHEX, SDD, SPDY

from pruneflow import layout
from pruneflow.config import Params, scoped
from pruneflow.steps import STEPS

MODEL = "lenet300100"
SPDY_SCOPE = f"spdy:{MODEL}"
# the stages whose outputs the module computes (and their upstream stages)
SPDY_LAST = f"spdy_results@{MODEL}"
TINY = {
    "runtime": {"threads": 1, "progress": "off"},
    # the top-level `train_dense` stage would own digits/lenet300100's checkpoint otherwise
    "model": {"name": "smallcnn"},
    "spdy": {**SPDY, "gmp": {**SPDY["gmp"], "profiles": ["spdy", "uniform"]}},
    # noise 0.3: the top-level `prepare` stage owns digits at 0.2
    "sdd": {**SDD, "noise_rate": 0.3},
    "chex": CHEX,
}
# (step, scope) in the order the stages run
PLAN = [
    ("prepare", "spdy"),
    ("train_dense", SPDY_SCOPE),
    ("profile", SPDY_SCOPE),
    ("recondb_layer", SPDY_SCOPE),
    ("recondb", SPDY_SCOPE),
    ("spdy_search", SPDY_SCOPE),
    ("spdy_oneshot", SPDY_SCOPE),
    ("spdy_gmp", SPDY_SCOPE),
    ("spdy_results", SPDY_SCOPE),
    ("prepare", "sdd"),
    ("sdd_dense", "sdd:lenet300100"),
    ("sdd_level", "sdd:lenet300100"),
    ("sdd_sweep", "sdd:lenet300100"),
    ("sdd_plots", "sdd:lenet300100"),
    ("chex_train", "chex:resnet_mini"),
    ("chex_extract", "chex:resnet_mini"),
    ("chex_compare", "chex:resnet_mini"),
    ("chex_report", "chex:resnet_mini"),
    ("report", None),
]
# what each method's stage shows under `dvc metrics show`
METRICS = {
    "spdy": f"metrics/spdy_results/digits-{MODEL}.json",
    "sdd": f"metrics/sdd_sweep/digits-{MODEL}.json",
    "chex": "metrics/chex_report/digits-resnet_mini.json",
}


@contextmanager
def _inside(root: Path) -> Iterator[None]:
    old, state = Path.cwd(), os.environ.get("PRUNEFLOW_STATE_DIR")
    os.chdir(root)
    os.environ["PRUNEFLOW_STATE_DIR"] = str(root / ".pruneflow")
    try:
        yield
    finally:
        os.chdir(old)
        if state is None:
            os.environ.pop("PRUNEFLOW_STATE_DIR")
        else:
            os.environ["PRUNEFLOW_STATE_DIR"] = state


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git + DVC copy of the project with tiny params, every method's outputs computed and
    committed to dvc.lock (what `dvc repro` would leave, minus the processes)."""
    root = tmp_path_factory.mktemp("project")
    copy_project(root)
    params = Params.model_validate(TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    with _inside(root):
        for step, scope in PLAN:
            STEPS[step].run_all(scoped(params, scope))
    _git(root, "init", "-q")
    commit_all(root, "tiny project")
    stages = [SPDY_LAST, "sdd_plots@lenet300100", "chex_report@resnet_mini"]
    _dvc(root, "commit", "--force", "--with-deps", *stages)
    commit_all(root, "dvc commit")
    return root


def _spdy_outputs(root: Path) -> dict[str, bytes]:
    """The SPDY files a colleague needs: checkpoints, timing table, database, results."""
    p = scoped(Params.model_validate(TINY), SPDY_SCOPE)
    files = [
        layout.dense_checkpoint(p),
        layout.timing_table(p),
        *sorted(f.relative_to(root) for f in (root / layout.recondb_dir(p)).rglob("*.*")),
        layout.spdy_dir(p) / "results.parquet",
    ]
    return {str(f): (root / f).read_bytes() for f in files}


def test_dvc_agrees_the_steps_outputs_are_up_to_date(project):
    status = json.loads(_dvc(project, "status", "--json", "--with-deps", SPDY_LAST).stdout)
    assert status == {}
    lock = _lock(project)
    assert lock[SPDY_LAST]["params"]["params.yaml"]["spdy.targets"] == [1.5, 2.0]


def test_metrics_show_lists_each_methods_headline_figures(project):
    shown = json.loads(_dvc(project, "metrics", "show", "--json").stdout)
    (workspace,) = [v for k, v in shown.items() if k == "workspace"] or list(shown.values())
    data = workspace["data"]
    for method, path in METRICS.items():
        assert path in data and "error" not in data[path], (method, data.get(path))
    results = pd.read_parquet(project / f"artifacts/spdy/{MODEL}/results.parquet")
    oneshot = pd.read_parquet(project / f"artifacts/spdy/{MODEL}/oneshot.parquet")
    spdy = data[METRICS["spdy"]]["data"]
    for row in results.itertuples():
        figures = spdy[row.profile][f"{row.target}x"]
        assert figures["acc"] == pytest.approx(row.acc, abs=1e-5)
        assert figures["measured_speedup"] == pytest.approx(row.measured_speedup, abs=1e-5)
    for row in oneshot.itertuples():
        figures = spdy[row.profile][f"{row.target}x"]
        assert figures["oneshot_calib_loss"] == pytest.approx(row.calib_loss, abs=1e-5)
    assert set(spdy) >= {"spdy", "uniform", "gmp", "prior", "dense_acc"}
    assert data[METRICS["sdd"]]["data"]["curves"]["magnitude/rewind/seed0"]["best_test_acc"] > 0
    assert data[METRICS["chex"]]["data"]["flops-70%"]["chex"]["test_acc_mean"] > 0


def test_plots_show_renders_the_sweep_and_spdy_plots(project, tmp_path):
    out = tmp_path / "plots"
    _dvc(project, "plots", "show", "--out", str(out))
    html = (out / "index.html").read_text()
    expected = [
        f"spdy-{MODEL}-search.png",
        f"spdy-{MODEL}-profiles.png",
        f"sdd-digits-{MODEL}-accuracy.png",
        "chex-digits-resnet_mini-accuracy.png",
        f"spdy-search-{MODEL}.png",  # the report's figures
    ]
    for name in expected:
        assert name in html, name
    # the sdd curves as vega specs with their points
    shown = json.loads(_dvc(project, "plots", "show", "--json").stdout)
    curve = f"artifacts/sdd/digits-{MODEL}/curves/test_acc.csv"
    (plot,) = shown["data"][curve]
    assert plot["type"] == "vega" and plot["content"]["data"]["values"]
    images = [p for p in shown["data"] if p.endswith(".png")]
    assert all(shown["data"][p][0]["type"] == "image" for p in images) and len(images) >= 8


def test_exp_run_with_one_speedup_target(project, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(project, repo, symlinks=True)
    before = _lock(repo)
    # up to the one-shot comparison (gradual pruning would only add processes to wait for)
    oneshot_stage = f"spdy_oneshot@{MODEL}"
    run = _dvc(repo, "exp", "run", "-S", "spdy.targets=[2.0]", oneshot_stage)
    assert yaml.safe_load((repo / "params.yaml").read_text())["spdy"]["targets"] == [2.0]
    after = _lock(repo)
    # the search stage lists the targets, so DVC reruns it (deleting its outputs first), but its
    # 2.0x step comes back from the step cache: only the comparison computes
    search_stage = f"spdy@{MODEL}"
    assert {s for s in after if after[s] != before.get(s)} == {search_stage, oneshot_stage}, (
        run.stdout
    )
    assert "spdy_search[target=2.0]: restored from the step cache" in run.stderr
    assert after[oneshot_stage]["params"]["params.yaml"]["spdy.targets"] == [2.0]
    assert "spdy_oneshot: running" in run.stderr  # computed: a new fingerprint
    oneshot = pd.read_parquet(repo / f"artifacts/spdy/{MODEL}/oneshot.parquet")
    assert set(oneshot["target"]) == {2.0} and len(oneshot) == 4  # spdy, uniform, gmp, prior
    exps = json.loads(_dvc(repo, "exp", "show", "--json").stdout)
    targets = [
        exp["data"]["params"]["params.yaml"]["data"]["spdy"]["targets"]
        for rev in exps
        for exp in [rev, *[e for b in rev.get("experiments") or [] for e in b["revs"]]]
        if exp.get("data")
    ]
    assert [2.0] in targets and [1.5, 2.0] in targets


def test_a_colleague_pulls_timing_tables_and_databases_from_a_local_remote(project, tmp_path):
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    shutil.copytree(project, repo, symlinks=True)
    _dvc(repo, "remote", "add", "-d", "local", str(remote))
    commit_all(repo, "local remote")
    _dvc(repo, "push", "--with-deps", SPDY_LAST)
    original = _spdy_outputs(repo)

    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    assert not (clone / "artifacts").exists()  # neither the files nor a DVC cache
    _dvc(clone, "pull", "--with-deps", SPDY_LAST)
    assert _spdy_outputs(clone) == original
    assert json.loads(_dvc(clone, "status", "--json", "--with-deps", SPDY_LAST).stdout) == {}
    lock = (clone / "dvc.lock").read_bytes()
    repro = _dvc(clone, "repro", SPDY_LAST)
    assert "Running stage" not in repro.stdout, repro.stdout
    assert (clone / "dvc.lock").read_bytes() == lock and _spdy_outputs(clone) == original
