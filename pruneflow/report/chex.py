"""The CHEX section: the equal-FLOPs comparison table and its figure, the channel counts CHEX
chose and how they evolved, the ablations; figures drawn by :mod:`pruneflow.chex.report`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pruneflow import config
from pruneflow.chex import paths
from pruneflow.chex.report import (
    COMPARISON_COLUMNS,
    plot_ablation,
    plot_accuracy,
    plot_channels,
    plot_exploration,
)
from pruneflow.config import Params
from pruneflow.io import parquet_metadata, read_parquet
from pruneflow.report import fmt
from pruneflow.report.doc import Figure, Heading, Note, Table, Text
from pruneflow.report.section import Section

RUN = "uv run pruneflow run chex"
METHOD_ORDER = ("static", "prune_finetune", "chex")
METHOD_LABELS = {"static": "static", "prune_finetune": "prune, then fine-tune", "chex": "CHEX"}
# exploration.parquet (pruneflow.chex.explore.ChexExplorer.history): one row per step and group
EXPLORATION_COLUMNS = {
    "step": "iu",
    "group": "O",
    "size": "iu",
    "allocated": "iu",
    "active": "iu",
    "regrown": "iu",
    "kept_regrown": "iu",
}
ABLATION_COLUMNS = {
    "method": "O",
    "variant": "O",
    "flops_reduction_target": "f",
    "flops_reduction": "f",
    "seed": "iu",
    "test_acc": "f",
}


def _comparison(sec: Section, model: str, path: Path, figures: Path, title: str) -> None:
    frame = read_parquet(path, {**COMPARISON_COLUMNS, "flops": "iu"})
    meta = parquet_metadata(path)
    dense_acc = [float(a) for a in meta.get("dense_test_acc", [])]
    flops_dense = float(meta.get("flops_dense", math.nan))
    methods = [m for m in METHOD_ORDER if m in set(frame["method"])]
    methods += sorted(set(frame["method"]) - set(methods))
    rows = []
    for target, g in frame.groupby("flops_reduction_target", sort=True):
        row = [f"−{target:.0%}", fmt.pct(dense_acc) if dense_acc else fmt.DASH]
        for method in methods:
            sub = g[g["method"] == method]
            row.append(
                f"{fmt.pct(sub['test_acc'])} (−{sub['flops_reduction'].mean():.1%})"
                if len(sub)
                else fmt.DASH
            )
        row.append(str(g["seed"].nunique()))
        rows.append(row)
    sec.blocks.append(
        Table(
            f"chex-comparison-{model}",
            f"{model}: test accuracy (%) at equal FLOPs and epochs",
            [
                "FLOPs target",
                "dense",
                *(METHOD_LABELS.get(m, m) for m in methods),
                "seeds",
            ],
            rows,
            note="Mean ± std over seeds; in parentheses the FLOPs reduction each method reached. "
            + (f"Dense model: {flops_dense / 1e6:.2f} MFLOPs per image." if flops_dense else ""),
        )
    )
    name = f"chex-{model}-accuracy.png"
    plot_accuracy(frame, dense_acc, flops_dense, figures / name, f"Accuracy vs FLOPs: {title}")
    sec.blocks.append(
        Figure(
            f"chex-{model}-accuracy",
            name,
            "Test accuracy against FLOPs per image (mean, whiskers: range over seeds).",
        )
    )


def _channels(sec: Section, model: str, path: Path, figures: Path, title: str) -> None:
    history = read_parquet(path, EXPLORATION_COLUMNS)
    settings: dict[str, Any] = parquet_metadata(path).get("settings", {})
    last = history[history["step"] == history["step"].max()]
    sizes = {str(r.group): int(r.size) for r in last.itertuples()}
    kept = {str(r.group): int(r.active) for r in last.itertuples()}
    target, seed = settings.get("flops_reduction"), settings.get("seed", 0)
    goal = (
        f"−{target:.0%} FLOPs"
        if target is not None
        else f"{settings.get('sparsity', math.nan):.0%} channel sparsity"
    )
    sec.blocks.append(
        Table(
            f"chex-channels-{model}",
            f"{model}: channels per group after exploration ({goal}, seed {seed})",
            ["channel group", "dense", "CHEX keeps", "kept (%)"],
            [[g, str(sizes[g]), str(kept[g]), f"{100 * kept[g] / sizes[g]:.0f}"] for g in sizes],
            note=f"After the last of {int(history['step'].max())} prune/regrow steps "
            "(`chex_train`); channels meeting in a residual sum are one group.",
        )
    )
    if target is None:  # the figures are drawn per FLOPs target
        return
    record = {
        "method": "chex",
        "target": float(target),
        "seed": int(seed),
        "sizes": sizes,
        "channels": kept,
        "exploration": history.to_dict("records"),
    }
    for kind, draw, caption in (
        (
            "channels",
            plot_channels,
            "Channels CHEX kept per group (bars) against the dense widths (outlines).",
        ),
        (
            "exploration",
            plot_exploration,
            "How the sub-model evolved: channels allocated per group at every prune/regrow "
            "step, and how many regrown channels the next step kept.",
        ),
    ):
        name = f"chex-{model}-{kind}.png"
        draw([record], figures / name, f"CHEX {kind}: {title}")
        sec.blocks.append(Figure(f"chex-{model}-{kind}", name, caption))


def _ablation(sec: Section, model: str, path: Path, figures: Path, title: str) -> None:
    frame = read_parquet(path, ABLATION_COLUMNS)
    if frame.empty:
        return
    chex = frame[frame["method"] == "chex"]
    rows = []
    for (target, variant), g in chex.groupby(["flops_reduction_target", "variant"], sort=True):
        rows.append([f"−{target:.0%}", str(variant) or "full", fmt.pct(g["test_acc"]), str(len(g))])
    sec.blocks.append(
        Table(
            f"chex-ablation-{model}",
            f"{model}: CHEX ablations, test accuracy (%)",
            ["FLOPs target", "variant", "test acc (%)", "runs"],
            rows,
        )
    )
    name = f"chex-{model}-ablation.png"
    plot_ablation(frame, figures / name, f"CHEX ablations: {title}")
    sec.blocks.append(
        Figure(f"chex-{model}-ablation", name, "CHEX and its ablations against the baselines.")
    )


def chex_section(params: Params, figures: Path) -> Section:
    sec = Section("CHEX", "chex", RUN)
    for model in params.chex.models:
        p = config.scoped(params, f"chex:{model}")
        title = f"{model} on {p.data.dataset}, {p.train.epochs} epochs"
        sec.blocks.append(Heading(title, 3, f"chex-{model}"))
        if sec.look(paths.comparison_table(p)):
            _comparison(sec, model, paths.comparison_table(p), figures, title)
        if sec.look(paths.exploration_table(p)):
            _channels(sec, model, paths.exploration_table(p), figures, title)
        if params.chex.compare.ablations and sec.look(paths.ablation_table(p)):
            _ablation(sec, model, paths.ablation_table(p), figures, title)
        absent = [q for q in sec.missing if str(q).startswith(str(paths.chex_dir(p)))]
        if absent:
            listed = ", ".join(f"`{q}`" for q in absent)
            sec.blocks.append(Note(f"Not produced yet: {listed}. `{RUN}` makes them."))
    c = params.chex.compare
    intro = Text(
        f"Training from scratch with channel exploration against static and "
        f"prune-then-fine-tune networks at equal FLOPs: targets "
        f"{fmt.joined(f'−{t:.0%}' for t in c.targets)} FLOPs, seeds {fmt.joined(c.seeds)}."
    )
    return sec.finish("CHEX: channel exploration", intro)
