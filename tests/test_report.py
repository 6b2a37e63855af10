"""The report (pruneflow.report), built from small synthetic tables with the real schemas.

The tables are written by the real writers: the timing table by ``write_timing_table``, the
SPDY tables in the SPDY steps' own columns and files (their steps need a trained model and a
reconstruction database, too slow here), the sweep tables by
the ``sdd_sweep`` step from per-level JSON records, CHEX's comparison table by the
``chex_report`` step from run records, the exploration history as ``chex_train`` writes it.
Only the numbers are made up (shaped like the real results), so this runs in seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from torch import nn

from pruneflow import config, layout
from pruneflow.chex import paths as chex_paths
from pruneflow.chex.explore import ExploreSettings
from pruneflow.chex.methods import RunResult
from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.io import write_json, write_parquet
from pruneflow.models import build, prunable_layers
from pruneflow.report import build_report, schemas
from pruneflow.sparsity.grid import skipped_layers, sparsity_grid
from pruneflow.spdy.paths import (
    ONESHOT_COLUMNS,
    PROFILE_COLUMNS,
    PROFILES_COLUMNS,
    RESULTS_COLUMNS,
    SEARCH_COLUMNS,
)
from pruneflow.steps.chex import CHEX_REPORT, compare_items
from pruneflow.steps.sdd import SDD_SWEEP, chains, dense_file, level_file, record_file
from pruneflow.timing.table import FORMAT, host_description, write_timing_table

TREE = {
    "spdy": {"models": ["smallcnn", "mlp1024"], "targets": [2.0, 3.0], "model_targets": {}},
    "sdd": {"seeds": [0, 1], "final_sparsity": 0.99},
    "chex": {"compare": {"targets": [0.7, 0.9], "seeds": [0, 1], "ablations": []}},
}
CHEX_SIZES = {
    "conv1": 8,
    "stage1.conv1": 8,
    "stage2.conv1": 16,
    "stage2.conv2": 16,
    "stage3.conv1": 32,
    "stage3.conv2": 32,
}


def report_params(root: Path) -> Params:
    paths = {"artifacts": str(root / "artifacts"), "metrics": str(root / "metrics")}
    return config.from_dict({**TREE, "paths": paths})


# ---- SPDY ----------------------------------------------------------------------------------
def _layers(model: str) -> tuple[nn.Module, list[str], list[str]]:
    net = build(model, 10, (1, 28, 28))
    names = prunable_layers(net)
    skipped = skipped_layers(model, names, True)
    return net, names, skipped


def write_timing(params: Params, rng: np.random.Generator) -> None:
    g = params.spdy.grid
    levels = sparsity_grid(g.min_sparsity, g.max_sparsity, g.steps)
    for model in params.spdy.models:
        net, names, skipped = _layers(model)
        layers = [n for n in names if n not in skipped]
        rows = []
        dense_sum = 0.0
        for layer in layers:
            op = "conv2d" if isinstance(net.get_submodule(layer), nn.Conv2d) else "linear"
            dense = 0.4 + 2.0 * rng.random()
            dense_sum += dense
            for level, s in enumerate(levels):
                sparse = dense * (0.12 + 0.9 * (1 - s)) * (1 + 0.03 * rng.standard_normal())
                t = dense if level == 0 or sparse >= dense else sparse
                rows.append(
                    {
                        "layer": layer,
                        "layer_index": names.index(layer),
                        "op": op,
                        "level": level,
                        "sparsity": s,
                        "backend": "dense" if t == dense else "csr_numba",
                        "device": "cpu",
                        "threads": 1,
                        "batch_size": 64,
                        "time_ms": t,
                        "time_ms_p10": 0.97 * t,
                        "time_ms_p90": 1.05 * t,
                        "repeats": 10,
                    }
                )
        meta = {
            "format": FORMAT,
            "model": model,
            "layers": layers,
            "all_layers": names,
            "skipped_layers": skipped,
            "levels": levels,
            "batch_size": 64,
            "threads": 1,
            "device": "cpu",
            "host": host_description(1),
            "dense_total_ms": dense_sum + 0.8,
            "prunable_dense_ms": dense_sum,
            "remainder_ms": 0.8,
        }
        p = config.scoped(params, f"spdy:{model}")
        write_timing_table(layout.timing_table(p), pd.DataFrame(rows), meta)


_PENALTY = {"spdy": 1.0, "prior": 1.4, "gmp": 1.7, "uniform": 2.4}


def write_spdy_results(params: Params, rng: np.random.Generator) -> None:
    """Every SPDY table, in the columns and files of the steps that write them
    (pruneflow.steps.spdy, pruneflow.steps.spdy_gmp)."""
    g = params.spdy.grid
    levels = sparsity_grid(g.min_sparsity, g.max_sparsity, g.steps)
    for model in params.spdy.models:
        p = config.scoped(params, f"spdy:{model}")
        _, names, skipped = _layers(model)
        layers = [n for n in names if n not in skipped]
        oneshot, results, chosen_rows = [], [], []
        for target in params.spdy.targets:
            for seed in (0, 1):
                dense = 0.985 + 0.002 * seed
                for profile in schemas.ONESHOT_PROFILES:
                    drop = 0.01 * (target - 1) ** 2 * _PENALTY[profile]
                    oneshot.append(
                        {
                            "model": model,
                            "target": float(target),
                            "profile": profile,
                            "calib_loss": 0.05 + drop + 0.002 * rng.random(),
                            "test_acc": dense - 3 * drop + 0.003 * rng.standard_normal(),
                            "predicted_speedup": target * (1 - 0.01 * rng.random()),
                            "dp_calls": 180 if profile == "spdy" else int(profile == "prior"),
                            "profiles_scored": 95 if profile == "spdy" else 1,
                            "seed": seed,
                        }
                    )
                    if profile != "prior":
                        results.append(
                            {
                                "model": model,
                                "target": float(target),
                                "profile": profile,
                                "dense_acc": dense,
                                "acc": dense - drop + 0.002 * rng.standard_normal(),
                                "predicted_speedup": float(target),
                                "measured_speedup": target * (0.92 + 0.04 * rng.random()),
                                "seed": seed,
                            }
                        )
            k, local = 30, 50
            losses = 0.05 + 0.5 * rng.random(k + local) * np.linspace(1, 0.1, k + local)
            best = np.minimum.accumulate(losses)
            history = pd.DataFrame(
                {
                    "eval": np.arange(k + local),
                    "phase": ["random"] * k + ["local"] * local,
                    "d": [0] * k + list(np.repeat([3, 2, 1], [20, 20, 10])),
                    "calib_loss": losses,
                    "pred_time_ms": 5.0 / target + 0.1 * rng.random(k + local),
                    "best": best,
                    "new_profile": rng.random(k + local) < 0.7,
                    "improved": losses <= best,
                }
            )
            write_parquet(schemas.search_file(p, target), history[list(SEARCH_COLUMNS)])
            for name in schemas.ONESHOT_PROFILES:
                chosen = 8 * target + rng.integers(-8, 9, len(layers)) - 2 * (name != "spdy")
                chosen = np.clip(chosen, 0, len(levels) - 1).astype(int)
                chosen_rows += [
                    {
                        "target": float(target),
                        "profile": name,
                        "layer": layer,
                        "level": int(lv),
                        "sparsity": levels[lv],
                    }
                    for layer, lv in zip(layers, chosen, strict=True)
                ]
                if name == "spdy":
                    profile = pd.DataFrame(
                        {
                            "layer": layers,
                            "level": chosen,
                            "sparsity": [levels[i] for i in chosen],
                            "time_ms": rng.random(len(layers)),
                            "error_score": (chosen / 40.0) ** 2,
                        }
                    )
                    write_parquet(schemas.profile_file(p, target), profile[list(PROFILE_COLUMNS)])
        write_parquet(schemas.oneshot_file(p), pd.DataFrame(oneshot, columns=list(ONESHOT_COLUMNS)))
        write_parquet(
            schemas.profiles_file(p), pd.DataFrame(chosen_rows, columns=list(PROFILES_COLUMNS))
        )
        write_parquet(schemas.results_file(p), pd.DataFrame(results, columns=list(RESULTS_COLUMNS)))


# ---- sparse double descent -----------------------------------------------------------------
def _sdd_acc(level: int, n: int, retrain: str, seed: int) -> float:
    """Light, critical (dip), sweet (rise above dense), collapsed: the paper's shape."""
    x = level / n
    acc = 0.843 - 0.05 * np.sin(np.pi * min(x / 0.5, 1.0)) * (x < 0.5)
    acc += 0.06 * np.sin(np.pi * (x - 0.5) / 0.35) * (0.5 <= x < 0.85)
    acc -= 0.6 * max(0.0, x - 0.85) ** 1.2
    return float(acc - (0.01 if retrain == "reinit" and x < 0.6 else 0.0) + 0.002 * seed)


def write_sdd(params: Params) -> None:
    for model in params.sdd.models:
        p = config.scoped(params, f"sdd:{model}")
        n = len(chains(p)[0])
        for seed in p.sdd.seeds:
            write_json(
                record_file(dense_file(p, seed)),
                {
                    "level": 0,
                    "seed": seed,
                    "sparsity": 0.0,
                    "remaining": 266_200,
                    "train_acc_noisy": 0.98,
                    "train_acc_true": 0.80,
                    "noise_fit": 0.97,
                    "train_loss": 0.05,
                    "test_acc": _sdd_acc(0, n, "rewind", seed),
                    "test_loss": 0.9,
                    "test_size": 1000,
                    "learning_distance": 30.0,
                    "target_sparsity": 0.0,
                    "final_epoch_loss": 0.1,
                    "history": {"loss": [1.0, 0.1], "acc": [0.5, 0.98]},
                },
            )
        for chain in chains(p):
            for item in chain:
                level, s = item["level"], 1 - 0.8 ** item["level"]
                fit = max(0.2, 0.98 - 0.9 * max(0.0, level / n - 0.5))
                write_json(
                    record_file(level_file(p, item)),
                    {
                        "method": item["method"],
                        "retrain": item["mode"],
                        "seed": item["seed"],
                        "level": level,
                        "sparsity": s,
                        "target_sparsity": s,
                        "remaining": int(266_200 * (1 - s)),
                        "train_acc_noisy": fit,
                        "train_acc_true": 0.8 + 0.1 * (1 - fit),
                        "noise_fit": fit,
                        "train_loss": 0.1,
                        "test_acc": _sdd_acc(level, n, item["mode"], item["seed"]),
                        "test_loss": 0.8,
                        "test_size": 1000,
                        "learning_distance": 30.0 * (1 - s) ** 0.5 + 2,
                        "final_epoch_loss": 0.1,
                    },
                )
        SDD_SWEEP.compute(p)


# ---- CHEX ----------------------------------------------------------------------------------
def write_chex(params: Params, rng: np.random.Generator) -> None:
    for model in params.chex.models:
        p = config.scoped(params, f"chex:{model}")
        flops_dense = 4_729_728
        history: list[dict] = []  # the exploration of CHEX at -70%, seed 0 (chex_train's run)
        for item in compare_items(p):
            method, target = item["method"], float(item["target"])
            keep = 1.0 if method == "dense" else np.sqrt(1 - target)
            if method == "chex":
                channels = {
                    g: max(1, min(s, round(s * keep * (0.7 + 0.6 * rng.random()))))
                    for g, s in CHEX_SIZES.items()
                }
            else:
                channels = {g: max(1, round(s * keep)) for g, s in CHEX_SIZES.items()}
            exploration = [
                {
                    "step": step,
                    "iteration": 29 * step,
                    "group": g,
                    "size": s,
                    "before": channels[g],
                    "allocated": channels[g],
                    "regrown": max(0, 3 - step),
                    "active": channels[g],
                    "recovered": 0,
                    "kept_regrown": max(0, 2 - step),
                    "delta": 0.3 * (1 - step / 5),
                }
                for step in range(1, 6)
                for g, s in CHEX_SIZES.items()
            ]
            result = RunResult(
                method=method,
                target=target,
                seed=item["seed"],
                variant=item.get("variant"),
                test_acc=0.974
                - (0.0 if method == "dense" else 0.05 * target**3)
                + 0.003 * rng.standard_normal(),
                test_loss=0.1,
                val_acc=0.97,
                flops_dense=flops_dense,
                flops=int(flops_dense * (1 - target) * (1 - 0.003 * rng.random())),
                params_dense=23_000,
                params=int(23_000 * keep**2),
                channels=channels,
                sizes=CHEX_SIZES,
                history={"loss": [1.0], "acc": [0.9], "lr": [0.1]},
                exploration=exploration if method == "chex" else [],
            )
            write_json(chex_paths.run_record(p, item), result.record())
            if (method, target, item["seed"]) == ("chex", 0.7, 0):
                history = exploration
        CHEX_REPORT.compute(p)
        settings = ExploreSettings(delta_t=29, t_max=290, flops_reduction=0.7, seed=0)
        write_parquet(
            chex_paths.exploration_table(p),
            pd.DataFrame(history).astype({"group": object}),
            metadata={"settings": asdict(settings)},
        )


def write_all(params: Params, methods: tuple[str, ...] = ("spdy", "sdd", "chex")) -> None:
    rng = np.random.default_rng(0)
    if "spdy" in methods:
        write_timing(params, rng)
        write_spdy_results(params, rng)
    if "sdd" in methods:
        write_sdd(params)
    if "chex" in methods:
        write_chex(params, rng)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory):
    """One report over every method's tables (built once for the module's tests)."""
    root = tmp_path_factory.mktemp("report")
    params = report_params(root)
    write_all(params)
    return params, build_report(params)


# ---- tests ---------------------------------------------------------------------------------
TABLE_IDS = [
    "methods",
    "spdy-timing",
    "spdy-oneshot",
    "spdy-search",
    "spdy-gradual",
    "sdd-summary-lenet300100",
    "sdd-phases-lenet300100",
    "sdd-lottery-lenet300100",
    "chex-comparison-resnet_mini",
    "chex-channels-resnet_mini",
]


def test_report_covers_every_method(full_report):
    params, paths = full_report
    assert paths.markdown == layout.reports_dir(params) / "report.md"
    md = paths.markdown.read_text()
    page = paths.html.read_text()
    for method in ("SPDY", "Sparse double descent", "CHEX"):
        assert re.search(rf"\| {method} \| ran \|", md), method
    for key in TABLE_IDS:
        assert f'<table id="table-{key}">' in page, key
    # every figure the Markdown links exists; the HTML inlines exactly those
    links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    assert len(links) >= 12
    for link in links:
        assert (paths.markdown.parent / link).stat().st_size > 5_000, link
    assert page.count('src="data:image/png;base64,') == len(links)
    assert sorted(p.name for p in paths.figures.iterdir()) == sorted(
        Path(link).name for link in links
    )


def test_html_is_self_contained(full_report):
    page = full_report[1].html.read_text()
    assert "<script" not in page.lower()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith(("data:", "#")) for s in sources), sources[:5]
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page and "url(" not in page


def test_header_says_which_params_ran(full_report):
    params, paths = full_report
    md = paths.markdown.read_text()
    assert "targets 2x, 3x" in md
    assert "seeds 0, 1" in md and "lenet300100" in md and "resnet_mini" in md
    from pruneflow.report.header import params_hash

    assert params_hash(params) in md


def test_spdy_gradual_table_has_the_paper_layout(full_report):
    md = full_report[1].markdown.read_text()
    block = md.split("**Gradual pruning to each profile")[1].split("\n\n")[1]
    header, _, *rows = block.splitlines()
    assert header.split(" | ")[:5] == [
        "| model",
        "dense acc (%)",
        "target speedup",
        "SPDY acc (%)",
        "SPDY speedup, measured (predicted)",
    ]
    assert "GMP acc (%)" in header and "uniform speedup" in header
    assert len(rows) == 4  # 2 models x 2 targets
    first = rows[0].split(" | ")
    assert first[0] == "| smallcnn" and first[2] == "2x"
    assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", first[3])  # two seeds: mean ± std
    assert re.fullmatch(r"\d\.\d\dx \(2\.00x\)", first[4])  # measured (predicted)
    assert rows[1].startswith("|  | ")  # model and dense accuracy once per model


def test_rebuilding_gives_identical_files(full_report):
    params, paths = full_report
    before = {p: p.read_bytes() for p in (paths.markdown, paths.html)}
    build_report(params)
    assert {p: p.read_bytes() for p in before} == before


def test_absent_methods_are_listed_as_not_run(tmp_path):
    params = report_params(tmp_path)
    write_all(params, ("sdd",))
    md = build_report(params).markdown.read_text()
    assert "| SPDY | not run |" in md and "| CHEX | not run |" in md
    assert "| Sparse double descent | ran |" in md
    assert "SPDY was not run" in md and "`uv run pruneflow run spdy`" in md
    assert "CHEX was not run" in md and "`uv run pruneflow run chex`" in md


def test_partial_spdy_names_what_is_missing(tmp_path):
    params = report_params(tmp_path)
    write_timing(params, np.random.default_rng(0))
    paths = build_report(params)
    md = paths.markdown.read_text()
    assert "| SPDY | partly run |" in md
    assert "spdy-timing-smallcnn.png" in md and "spdy-timing-mlp1024.png" in md
    oneshot = schemas.oneshot_file(config.scoped(params, "spdy:smallcnn"))
    assert f"`{oneshot}`" in md


def test_nothing_run_still_builds(tmp_path):
    md = build_report(report_params(tmp_path)).markdown.read_text()
    assert md.count("| not run |") == 4  # SPDY, double descent, CHEX, structured


def test_corrupt_table_is_an_error_naming_it_and_keeps_the_old_report(tmp_path):
    params = report_params(tmp_path)
    write_all(params, ("chex",))
    paths = build_report(params)
    before = {p: p.read_bytes() for p in (paths.markdown, paths.html)}
    figures = sorted(paths.figures.iterdir())
    table = chex_paths.comparison_table(config.scoped(params, "chex:resnet_mini"))
    table.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(PruneflowError, match=re.escape(str(table))):
        build_report(params)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(paths.figures.iterdir()) == figures
    assert not [p for p in paths.markdown.parent.iterdir() if p.name.endswith(".tmp")]


def test_schema_mismatch_names_file_and_column(tmp_path):
    params = report_params(tmp_path)
    p = config.scoped(params, "spdy:smallcnn")
    path = schemas.oneshot_file(p)
    write_parquet(path, pd.DataFrame({"model": ["smallcnn"], "target": [2.0]}))
    with pytest.raises(PruneflowError, match=rf"{re.escape(str(path))}.*'profile'"):
        build_report(params)


def test_read_only_output_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    params = report_params(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: refuse like a read-only mount would
        real = tempfile.mkstemp

        def refuse(*args, **kwargs):
            if Path(kwargs.get("dir", "")).resolve() == out.resolve():
                raise PermissionError(30, "Read-only file system")
            return real(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    else:
        out.chmod(0o555)
    try:
        with pytest.raises(PruneflowError, match=rf"cannot write {re.escape(str(out))}/"):
            build_report(params, out)
    finally:
        out.chmod(0o755)
    assert list(out.iterdir()) == []


def test_schemas_check_values_and_name_the_file(tmp_path):
    frame = pd.DataFrame(
        {
            "eval": [0, 1],
            "phase": ["random", "sideways"],
            "d": [0, 0],
            "calib_loss": [0.3, 0.2],
            "pred_time_ms": [1.0, 1.0],
            "best": [0.3, 0.2],
            "new_profile": [True, True],
            "improved": [True, True],
        }
    )
    path = write_parquet(tmp_path / "search.parquet", frame)
    with pytest.raises(PruneflowError, match="search.parquet.*sideways.*allowed: random, local"):
        schemas.SEARCH.read(path)
    frame.loc[1, "phase"] = "local"
    assert len(schemas.SEARCH.read(write_parquet(path, frame))) == 2
    with pytest.raises(PruneflowError, match="search.parquet has no column 'best'"):
        schemas.SEARCH.read(write_parquet(path, frame.drop(columns="best")))
    # one folder per target, named by layout (as the producer and dvc.yaml name it)
    p = config.scoped(report_params(tmp_path), "spdy:mlp1024")
    for table in (schemas.search_file(p, 2.5), schemas.profile_file(p, 2.5)):
        assert table.parent == layout.spdy_target_dir(p, 2.5)
        assert table.parent.name == layout.target_name(2.5)
    for table in (schemas.oneshot_file(p), schemas.results_file(p), schemas.profiles_file(p)):
        assert table.parent == layout.spdy_dir(p)


def test_cli_report_prints_paths_and_errors_in_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pruneflow.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TREE))
    params = config.load(tmp_path / "params.yaml")
    write_all(params, ("chex",))
    runner = CliRunner()
    ok = runner.invoke(app, ["report"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.split() == ["artifacts/reports/report.md", "artifacts/reports/report.html"]
    assert (tmp_path / "artifacts/reports/report.html").is_file()
    chex_paths.exploration_table(config.scoped(params, "chex:resnet_mini")).write_bytes(b"junk")
    bad = runner.invoke(app, ["report", "--set", "paths.artifacts=artifacts"])
    assert bad.exit_code == 2
    lines = [ln for ln in bad.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "exploration.parquet" in lines[0], bad.output


def test_claims_open_the_report_with_a_verdict_per_claim(full_report):
    params, paths = full_report
    md = paths.markdown.read_text()
    claims = md.split("## Claims")[1].split("\n## ")[0]
    assert md.index("## Claims") < md.index("## SPDY")
    for model in params.spdy.models:
        assert (
            f"{model}: at equal measured speedup (where a seed's models measured more than 5% "
            "apart, uniform's accuracy read at SPDY's speed off its own runs), SPDY's profile "
            "beats uniform" in claims
        )
    assert re.search(r"n=2 seeds, SPDY minus uniform \(points\) 2x [+-]\d", claims)
    assert all(
        v in ("reproduced", "not reproduced", "inconclusive")
        for v in re.findall(r"\| (reproduced|not reproduced|inconclusive) \|", claims)
    )


def test_a_run_with_claims_off_reads_none_and_says_so(full_report, tmp_path):
    """`claims: false` (the smoke preset): the same tables give no verdict; the report's
    Claims section and `pruneflow run`'s last table say that this run makes none."""
    from rich.console import Console

    from pruneflow.cli import _claims_table
    from pruneflow.report.claims import NO_CLAIMS, all_claims

    params, _ = full_report
    assert all_claims(params)  # the tables answer claims
    off = params.model_copy(update={"claims": False})
    assert all_claims(off) == []
    with tempfile.TemporaryDirectory() as out:
        moved = off.model_copy(
            update={"paths": off.paths.model_copy(update={"artifacts": str(Path(out) / "a")})}
        )
        # the report reads its tables from the artifacts folder: point it at the same ones
        shutil.copytree(params.paths.artifacts, moved.paths.artifacts)
        md = build_report(moved).markdown.read_text()
    section = md.split("## Claims")[1].split("\n## ")[0]
    assert NO_CLAIMS in section
    assert not re.search(r"\| (reproduced|not reproduced|inconclusive) \|", section)
    console = Console(record=True, width=200)
    _claims_table(console, [], NO_CLAIMS)
    assert "makes no claims" in console.export_text()


def _spdy_runs(
    spdy_gain: float, jitter: float, spdy_speed: float = 1.0, targets=(2.0, 3.0, 4.0)
) -> pd.DataFrame:
    """Three seeds; SPDY's paired difference to uniform is ``spdy_gain * target`` plus
    ``jitter`` times -1, 0, +1 over the seeds (so its mean is exactly the gain); SPDY's models
    measure ``spdy_speed`` times the others' speedup."""
    rng = np.random.default_rng(0)
    rows = []
    for target in targets:
        for seed in range(3):
            base = 0.97 - 0.01 * target + rng.normal(0, 0.01)  # shared by the seed's runs
            offset = {
                "spdy": spdy_gain * target + jitter * (seed - 1),
                "uniform": 0.0,
                "gmp": -0.01,
            }
            for profile, gain in offset.items():
                rows.append(
                    {
                        "model": "smallcnn",
                        "target": target,
                        "profile": profile,
                        "dense_acc": 0.98,
                        "acc": base + gain,
                        "predicted_speedup": target,
                        "measured_speedup": target
                        * 1.01
                        * (spdy_speed if profile == "spdy" else 1),
                        "seed": seed,
                    }
                )
    return pd.DataFrame(rows, columns=list(RESULTS_COLUMNS))


def test_spdy_claims_read_the_verdict_off_the_paired_intervals():
    from pruneflow.report.spdy import _model_claims

    ahead = {c.key: c for c in _model_claims("smallcnn", _spdy_runs(0.003, 0.0005))}
    assert ahead["spdy.smallcnn.above_uniform"].verdict == "reproduced"
    assert ahead["spdy.smallcnn.above_gmp"].verdict == "reproduced"
    assert ahead["spdy.smallcnn.meets_target"].verdict == "reproduced"
    assert "n=3 seeds" in ahead["spdy.smallcnn.above_uniform"].measured
    tied = {c.key: c for c in _model_claims("smallcnn", _spdy_runs(0.0, 0.003))}
    assert tied["spdy.smallcnn.above_uniform"].verdict == "inconclusive"
    behind = {c.key: c for c in _model_claims("smallcnn", _spdy_runs(-0.003, 0.0005))}
    assert behind["spdy.smallcnn.above_uniform"].verdict == "not reproduced"


def test_spdy_claims_hold_only_at_equal_measured_speed():
    from pruneflow.report.spdy import _model_claims

    def claims(gain: float, speed: float) -> dict:
        # one target: no other run of the baseline to read its accuracy at SPDY's speed off
        runs = _spdy_runs(gain, 0.0005, speed, targets=(4.0,))
        return {c.key: c for c in _model_claims("smallcnn", runs)}

    # ahead, but measuring 8% slower than the baselines: the lead may be bought with speed
    slower = claims(0.003, 0.92)
    assert slower["spdy.smallcnn.above_uniform"].verdict == "inconclusive"
    assert slower["spdy.smallcnn.above_gmp"].verdict == "inconclusive"
    assert "(SPDY measured 0.92x uniform's speed)" in slower["spdy.smallcnn.above_uniform"].measured
    # ahead and faster: still ahead at equal speed
    assert claims(0.003, 1.08)["spdy.smallcnn.above_uniform"].verdict == "reproduced"
    # behind while faster: the baseline may have traded speed for accuracy
    assert claims(-0.003, 1.08)["spdy.smallcnn.above_uniform"].verdict == "inconclusive"
    # behind and slower, or within the tolerance either way: the intervals decide
    assert claims(-0.003, 0.92)["spdy.smallcnn.above_uniform"].verdict == "not reproduced"
    assert claims(0.003, 0.96)["spdy.smallcnn.above_uniform"].verdict == "reproduced"
    assert claims(-0.003, 1.04)["spdy.smallcnn.above_uniform"].verdict == "not reproduced"
    assert "SPDY measured" not in claims(0.003, 0.96)["spdy.smallcnn.above_uniform"].measured


def test_a_baseline_that_measured_faster_is_read_at_spdys_speed_on_its_own_curve():
    from pruneflow.report.spdy import _baseline_at_spdy_speed, _model_claims

    rows = []
    for seed in range(4):
        jitter = 0.0005 * (seed - 1.5)
        # uniform's curve: 97% at 2x falling 1 point per target step; at 4x it measured 10%
        # faster than SPDY (4.4x against 4.0x)
        for target, speed, acc in ((2.0, 2.0, 0.97), (3.0, 3.0, 0.96), (4.0, 4.4, 0.95)):
            rows.append(("uniform", target, speed, acc + jitter, seed))
            rows.append(("gmp", target, speed, acc - 0.02 + jitter, seed))
        for target, acc in ((2.0, 0.972), (3.0, 0.962), (4.0, 0.956)):
            rows.append(("spdy", target, target, acc + jitter + 0.0002 * seed, seed))
    runs = pd.DataFrame(
        [
            {"model": "m", "target": t, "profile": prof, "dense_acc": 0.98, "acc": a,
             "predicted_speedup": t, "measured_speedup": s, "seed": seed}
            for prof, t, s, a, seed in rows
        ],
        columns=list(RESULTS_COLUMNS),
    )  # fmt: skip
    read, moved = _baseline_at_spdy_speed(runs, "uniform", 4.0)
    assert moved == 4
    # at SPDY's 4.0x uniform sits between its 3x (3.0x, 96%) and 4x (4.4x, 95%) runs
    expected = 0.96 - 0.01 * np.log(4.0 / 3.0) / np.log(4.4 / 3.0)
    assert np.allclose(read["measured_speedup"], 4.0)
    assert np.allclose(read["acc"] - 0.0005 * (read["seed"] - 1.5), expected)
    claims = {c.key: c for c in _model_claims("m", runs)}
    # read at equal speed SPDY is ahead by 0.35 points instead of 0.6: still beyond the interval
    assert claims["spdy.m.above_uniform"].verdict == "reproduced"
    assert "uniform read at SPDY's measured speed on 4 of 4 seeds" in (
        claims["spdy.m.above_uniform"].measured
    )
    # SPDY beyond the baseline's fastest run: nothing to read it off, the 5% rule decides
    beyond = runs.copy()
    beyond.loc[beyond["profile"] == "spdy", "measured_speedup"] *= 1.2
    read, moved = _baseline_at_spdy_speed(beyond, "uniform", 4.0)
    assert moved == 0
    assert np.allclose(read["acc"] - 0.0005 * (read["seed"] - 1.5), 0.95)
