"""The CHEX section: the equal-FLOPs comparison table and its figure, the channel counts CHEX
chose and how they evolved, the ablations; figures drawn by :mod:`pruneflow.chex.report`.

Every comparison shows n (seeds), the mean test accuracy with its 95% interval and the paired
difference to CHEX (runs paired by seed; :mod:`pruneflow.stats`). :func:`chex_claims` reads the
paper's claim off those differences: CHEX above the prune-then-fine-tune methods at equal FLOPs
(Hou et al., CVPR 2022, Sec. 4, Tables 1-2), both at every target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pruneflow import config, layout, stats
from pruneflow.chex import paths
from pruneflow.chex.methods import PRUNE_FINETUNE
from pruneflow.chex.report import (
    COMPARISON_COLUMNS,
    TABLE_VALUES,
    plot_ablation,
    plot_accuracy,
    plot_channels,
    plot_exploration,
)
from pruneflow.claims import Claim
from pruneflow.config import Params
from pruneflow.io import parquet_metadata, read_parquet
from pruneflow.report import fmt
from pruneflow.report.doc import Figure, Heading, Note, Table, Text
from pruneflow.report.section import Section
from pruneflow.report.stats_table import test_size as labels_test_size

RUN = "uv run pruneflow run chex"
METHOD_ORDER = ("chex", "l1_norm", "slimming", "static")
METHOD_LABELS = {
    "chex": "CHEX",
    "l1_norm": "L1-norm pruning, fine-tuned",
    "slimming": "network slimming, fine-tuned",
    "static": "static (from scratch)",
}
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


@dataclass(frozen=True)
class MethodEstimate:
    """One method at one target: its accuracy over seeds and its paired difference to CHEX."""

    method: str
    target: float
    seeds: list[int]
    accuracy: stats.Estimate
    flops_reduction: float
    vs_chex: stats.Estimate | None  # CHEX minus this method, over the seeds both ran


def _paired(a: pd.DataFrame, b: pd.DataFrame, test_size: int | None) -> stats.Estimate | None:
    """``a - b`` in test accuracy over the seeds both ran (None: no common seed)."""
    both = (
        a.set_index("seed")["test_acc"]
        .to_frame("a")
        .join(b.set_index("seed")["test_acc"].to_frame("b"), how="inner")
    )
    if both.empty:
        return None
    return stats.paired_difference(list(both["a"]), list(both["b"]), test_size)


def comparison_estimates(frame: pd.DataFrame, test_size: int | None) -> list[MethodEstimate]:
    """Per target and method (CHEX first, then the baselines): n, mean and 95% interval, and
    CHEX minus the method paired by seed."""
    out = []
    for target, g in frame.groupby("flops_reduction_target", sort=True):
        chex = g[g["method"] == "chex"]
        present = set(g["method"])
        methods = [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))
        for method in methods:
            sub = g[g["method"] == method].sort_values("seed")
            out.append(
                MethodEstimate(
                    method=method,
                    target=float(target),
                    seeds=[int(s) for s in sub["seed"]],
                    accuracy=stats.mean_interval(list(sub["test_acc"]), test_size),
                    flops_reduction=float(sub["flops_reduction"].mean()),
                    vs_chex=None
                    if method == "chex" or chex.empty
                    else _paired(chex, sub, test_size),
                )
            )
    return out


def _points(e: stats.Estimate | None, signed: bool = False) -> str:
    return fmt.DASH if e is None else e.format(scale=100.0, digits=2, signed=signed)


def _comparison(sec: Section, p: Params, path: Path, figures: Path, title: str) -> None:
    model = p.model.name
    frame = read_parquet(path, {**COMPARISON_COLUMNS, "flops": "iu"})
    TABLE_VALUES.check_frame(frame, path)
    meta = parquet_metadata(path)
    dense_acc = [float(a) for a in meta.get("dense_test_acc", [])]
    flops_dense = float(meta.get("flops_dense", math.nan))
    test_size = labels_test_size(layout.labels_table(p))
    rows = []
    if dense_acc:
        dense = stats.mean_interval(dense_acc, test_size)
        rows.append(["0%", "dense", str(dense.n), _points(dense), "0.0%", fmt.DASH])
    for e in comparison_estimates(frame, test_size):
        rows.append(
            [
                f"−{e.target:.0%}",
                METHOD_LABELS.get(e.method, e.method),
                str(e.accuracy.n),
                _points(e.accuracy),
                f"−{e.flops_reduction:.1%}",
                _points(e.vs_chex, signed=True),
            ]
        )
    epochs = meta.get("train", {}).get("epochs")
    sec.blocks.append(
        Table(
            f"chex-comparison-{model}",
            f"{model}: test accuracy (%) at equal FLOPs"
            + (f" and {epochs} epochs" if epochs else " and epochs"),
            [
                "FLOPs target",
                "method",
                "n",
                "test acc (%) [95% CI]",
                "FLOPs reached",
                "CHEX − method (points) [95% CI]",
            ],
            rows,
            note="n: seeds. Intervals: Student-t over seeds, with the binomial error of the "
            + (f"{test_size:,} test images" if test_size else "test set")
            + " added; the difference to CHEX is paired by seed (a positive one favours CHEX). "
            "Prune-then-fine-tune methods pre-train for part of the epochs and fine-tune for the "
            "rest, so every method trains for the same total. "
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


def _ablation(sec: Section, p: Params, path: Path, figures: Path, title: str) -> None:
    model = p.model.name
    frame = read_parquet(path, ABLATION_COLUMNS)
    TABLE_VALUES.check_frame(frame, path)
    if frame.empty:
        return
    test_size = labels_test_size(layout.labels_table(p))
    chex = frame[frame["method"] == "chex"]
    rows = []
    for target, at in chex.groupby("flops_reduction_target", sort=True):
        full = at[at["variant"] == "full"]
        variants = ["full", *sorted(set(at["variant"]) - {"full"})]
        for variant in variants:
            g = at[at["variant"] == variant].sort_values("seed")
            if g.empty:
                continue
            acc = stats.mean_interval(list(g["test_acc"]), test_size)
            diff = None if variant == "full" or full.empty else _paired(full, g, test_size)
            rows.append(
                [
                    f"−{target:.0%}",
                    "CHEX" if variant == "full" else str(variant),
                    str(acc.n),
                    _points(acc),
                    _points(diff, signed=True),
                ]
            )
    sec.blocks.append(
        Table(
            f"chex-ablation-{model}",
            f"{model}: CHEX ablations, test accuracy (%)",
            ["FLOPs target", "variant", "n", "test acc (%) [95% CI]", "CHEX − variant [95% CI]"],
            rows,
            note="A positive difference is what the removed ingredient is worth; paired by "
            "seed. Variants: pruneflow.chex.methods.apply_variant.",
        )
    )
    name = f"chex-{model}-ablation.png"
    plot_ablation(frame, figures / name, f"CHEX ablations: {title}")
    sec.blocks.append(
        Figure(f"chex-{model}-ablation", name, "CHEX and its ablations against the baselines.")
    )


CLAIM = (
    "CHEX, exploring channels while training from scratch, is more accurate than "
    "prune-then-fine-tune methods (L1-norm, network slimming) at equal FLOPs and epochs"
)


def _measured(model: str, estimates: list[MethodEstimate]) -> str:
    parts = []
    for target in sorted({e.target for e in estimates}):
        at = [e for e in estimates if e.target == target]
        n = max(e.accuracy.n for e in at)
        accs = ", ".join(
            f"{METHOD_LABELS.get(e.method, e.method).split(',')[0]} {_points(e.accuracy)}"
            for e in at
        )
        diffs = ", ".join(
            f"− {e.method} {_points(e.vs_chex, signed=True)}" for e in at if e.vs_chex is not None
        )
        parts.append(f"−{target:.0%} FLOPs (n={n}): {accs}; CHEX {diffs}")
    return f"{model}, test acc % [95% CI]: " + "; ".join(parts)


def chex_claims(params: Params) -> list[Claim]:
    """Per CHEX model with a comparison table: the claim, what the run measured and the verdict.

    The verdict combines CHEX minus each prune-then-fine-tune baseline at every target
    (:func:`pruneflow.stats.verdict` on the paired interval, then
    :func:`pruneflow.stats.combine`): reproduced only if CHEX is ahead of every one of them
    beyond the interval. ``static`` is measured and stated, not part of the verdict: the paper
    compares with pruning methods. No table: no claim (``[]``).
    """
    claims = []
    for model in params.chex.models:
        p = config.scoped(params, f"chex:{model}")
        path = paths.comparison_table(p)
        if not path.is_file():
            continue
        frame = read_parquet(path, COMPARISON_COLUMNS)
        TABLE_VALUES.check_frame(frame, path)
        estimates = comparison_estimates(frame, labels_test_size(layout.labels_table(p)))
        parts = [
            stats.verdict(e.vs_chex) if e.vs_chex is not None else stats.INCONCLUSIVE
            for e in estimates
            if e.method in PRUNE_FINETUNE
        ]
        claims.append(
            Claim(
                paper="CHEX (Hou et al., CVPR 2022)",
                key=f"chex.{model}.vs_prune_finetune",
                claim=CLAIM,
                measured=_measured(model, estimates),
                verdict=stats.combine(parts),
            )
        )
    return claims


def chex_section(params: Params, figures: Path) -> Section:
    sec = Section("CHEX", "chex", RUN)
    for model in params.chex.models:
        p = config.scoped(params, f"chex:{model}")
        title = f"{model} on {p.data.dataset}, {p.train.epochs} epochs"
        sec.blocks.append(Heading(title, 3, f"chex-{model}"))
        if sec.look(paths.comparison_table(p)):
            _comparison(sec, p, paths.comparison_table(p), figures, title)
        if sec.look(paths.exploration_table(p)):
            _channels(sec, model, paths.exploration_table(p), figures, title)
        if params.chex.compare.ablations and sec.look(paths.ablation_table(p)):
            _ablation(sec, p, paths.ablation_table(p), figures, title)
        absent = [q for q in sec.missing if str(q).startswith(str(paths.chex_dir(p)))]
        if absent:
            listed = ", ".join(f"`{q}`" for q in absent)
            sec.blocks.append(Note(f"Not produced yet: {listed}. `{RUN}` makes them."))
    ch = params.chex
    c = ch.compare
    intro = Text(
        "Training from scratch with channel exploration against prune-then-fine-tune methods "
        "(L1-norm filter pruning, Li et al., ICLR 2017; network slimming, Liu et al., ICCV "
        "2017) and the same-FLOPs network trained from scratch (static; Liu et al., ICLR 2019) "
        "at equal FLOPs and epochs: targets "
        f"{fmt.joined(f'−{t:.0%}' for t in c.targets)} FLOPs, seeds {fmt.joined(c.seeds)}. "
        f"CHEX explores every {ch.delta_t:g} epochs for the first {ch.t_max:g} of "
        f"{ch.train.epochs} (T_max at {ch.t_max / ch.train.epochs:.0%} of training, delta_0 = "
        f"{ch.delta0:g}: the paper's choices, not tuned here); network slimming's L1 strength "
        f"({c.slimming_l1:g}) is Liu et al.'s for ResNets and the fine-tuning LR "
        f"({c.finetune_lr:g}) was chosen on the validation split. Nothing is chosen on the test "
        "split, which only scores the final models."
    )
    return sec.finish("CHEX: channel exploration", intro)
