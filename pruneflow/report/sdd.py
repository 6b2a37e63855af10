"""The sparse double descent section: the sweep's curves with the four phases shaded, the
learning distance beside them, rewind vs re-init; figures drawn by :mod:`pruneflow.sdd.plots`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pruneflow import config
from pruneflow.config import SDD_METHODS, SDD_MODES, Params
from pruneflow.io import read_parquet
from pruneflow.report import fmt
from pruneflow.report.doc import Figure, Heading, Note, Table, Text
from pruneflow.report.section import Section
from pruneflow.sdd import plots
from pruneflow.sdd.paths import lottery_file, phases_file, read_sweep, sweep_file
from pruneflow.sdd.phases import PHASES
from pruneflow.sdd.sweep import curve_phases, mean_curves

RUN = "uv run pruneflow run sdd"
_LOTTERY = {
    "method": "O",
    "level": "iu",
    "remaining_pct": "f",
    "rewind_test_acc": "f",
    "reinit_test_acc": "f",
    "reinit_minus_rewind": "f",
}


def _remaining(sparsity: float) -> str:
    return f"{100 * (1 - float(sparsity)):.3g}%"


def _at(rows: pd.DataFrame, best: str) -> str:
    """The lowest / highest test accuracy of ``rows`` and the weights left there."""
    if rows.empty:
        return fmt.DASH
    i = rows["test_acc"].idxmin() if best == "min" else rows["test_acc"].idxmax()
    return f"{fmt.pct(rows.at[i, 'test_acc'])} ({_remaining(rows.at[i, 'sparsity'])} left)"


def _in(curve: pd.DataFrame, phase_rows: pd.DataFrame, phase: str) -> pd.DataFrame:
    hit = phase_rows[phase_rows["phase"] == phase]
    if hit.empty:
        return curve.iloc[0:0]
    first, last = int(hit["first_level"].iloc[0]), int(hit["last_level"].iloc[0])
    return curve[(curve["level"] >= first) & (curve["level"] <= last)]


def _curve_tables(model: str, table: pd.DataFrame, phases: pd.DataFrame) -> list[Table]:
    means = mean_curves(table)
    head, spans = [], []
    order = {name: i for i, name in enumerate((*SDD_METHODS, *SDD_MODES))}
    curves = sorted(
        means.groupby(["method", "retrain"], sort=False),
        key=lambda kv: (order.get(kv[0][0], 99), order.get(kv[0][1], 99)),
    )
    for (method, retrain), curve in curves:
        curve = curve.sort_values("level")
        ph = curve_phases(phases, method, retrain)
        dense = curve[curve["level"] == 0]["test_acc"]
        head.append(
            [
                method,
                retrain,
                str(int(curve["n_seeds"].max())),
                fmt.pct(dense.iloc[0]) if len(dense) else fmt.DASH,
                _at(_in(curve, ph, "critical"), "min"),
                _at(_in(curve, ph, "sweet"), "max"),
                _at(curve.tail(1), "min"),
                "yes" if len(ph) and bool(ph["double_descent"].iloc[0]) else "no",
            ]
        )
        for row in ph.sort_values("first_level").itertuples():
            acc = _in(curve, ph, row.phase)["test_acc"]
            spans.append(
                [
                    method,
                    retrain,
                    str(row.phase),
                    f"{int(row.first_level)}–{int(row.last_level)}",
                    f"{_remaining(row.start_sparsity)} → {_remaining(row.end_sparsity)}",
                    f"{100 * acc.min():.2f}–{100 * acc.max():.2f}" if len(acc) else fmt.DASH,
                ]
            )
    return [
        Table(
            f"sdd-summary-{model}",
            f"{model}: test accuracy (%) of the seed-mean curves",
            [
                "pruning",
                "retraining",
                "seeds",
                "dense",
                "critical phase: lowest",
                "sweet phase: best",
                "sparsest level",
                "double descent",
            ],
            head,
        ),
        Table(
            f"sdd-phases-{model}",
            f"{model}: the four phases (levels, weights left, test accuracy range in %)",
            ["pruning", "retraining", "phase", "levels", "weights left", "test acc (%)"],
            spans,
            note="Phases are read off the smoothed test-accuracy curve (sdd.phases); a curve "
            "without a second rise has no critical or sweet phase.",
        ),
    ]


def _lottery_table(model: str, path: Path) -> Table:
    frame = read_parquet(path, _LOTTERY)
    by_phase = "rewind_phase" in frame.columns
    rows = []
    for method, g in frame.groupby("method", sort=False):
        groups = (
            [
                (ph, g[g["rewind_phase"] == ph])
                for ph in (*PHASES, "")
                if ph in set(g["rewind_phase"])
            ]
            if by_phase
            else [("all levels", g)]
        )
        for phase, sub in groups:
            both = sub.dropna(subset=["reinit_minus_rewind"])
            rows.append(
                [
                    str(method),
                    str(phase) or "unlabelled",
                    f"{int(sub['level'].min())}–{int(sub['level'].max())}",
                    fmt.pct(sub["rewind_test_acc"].mean()),
                    fmt.pct(sub["reinit_test_acc"].mean()),
                    f"{int((both['reinit_minus_rewind'] > 0).sum())} of {len(both)}",
                ]
            )
    return Table(
        f"sdd-lottery-{model}",
        f"{model}: rewind (lottery ticket) vs random re-init, by phase of the rewind curve",
        ["pruning", "phase", "levels", "rewind acc (%)", "re-init acc (%)", "re-init better at"],
        rows,
        note="Mean test accuracy over the phase's levels (seed means).",
    )


def sdd_section(params: Params, figures: Path) -> Section:
    sec = Section("Sparse double descent", "sdd", RUN)
    blocks = sec.blocks
    for model in params.sdd.models:
        p = config.scoped(params, f"sdd:{model}")
        needed = [sweep_file(p), phases_file(p)]
        present = [sec.look(path) for path in needed]
        if not all(present):
            absent = ", ".join(f"`{q}`" for q, ok in zip(needed, present, strict=True) if not ok)
            blocks.append(Note(f"{model}: not produced yet: {absent}. `{RUN}` makes them."))
            continue
        table, phases, meta = read_sweep(p)
        noise = float(meta.get("noise_rate", p.noise.rate))
        title = f"{model} on {p.data.dataset}, {noise:.0%} {p.noise.kind} label noise"
        blocks.append(Heading(title, 3, f"sdd-{model}"))
        stem = f"sdd-{p.data.dataset}-{model}"
        plots.accuracy_figure(
            table, phases, figures / f"{stem}-accuracy.png", f"Sparse double descent: {title}"
        )
        plots.distance_figure(
            table, phases, figures / f"{stem}-distance.png", f"Learning distance: {title}"
        )
        blocks += [
            Figure(
                f"{stem}-accuracy",
                f"{stem}-accuracy.png",
                "Train (noisy and true labels) and test accuracy against the weights left "
                "(log scale, sparser to the right), the four phases shaded: I light, "
                "II critical, III sweet, IV collapsed.",
            ),
            Figure(
                f"{stem}-distance",
                f"{stem}-distance.png",
                "Learning distance (L2 between each level's start and trained weights) beside "
                "test accuracy, same phases.",
            ),
            *_curve_tables(model, table, phases),
        ]
        if {"rewind", "reinit"} <= set(table["retrain"]):
            plots.lottery_figure(
                table, phases, figures / f"{stem}-lottery.png", f"Lottery vs re-init: {title}"
            )
            blocks.append(
                Figure(
                    f"{stem}-lottery",
                    f"{stem}-lottery.png",
                    "Rewinding to the initial weights (lottery ticket) against re-initialising "
                    "at random, at every level; circles: re-init better.",
                )
            )
            if sec.look(lottery_file(p)):
                blocks.append(_lottery_table(model, lottery_file(p)))
            else:
                blocks.append(Note(f"Not produced yet: `{lottery_file(p)}`. `{RUN}` makes it."))
    sdd = params.sdd
    intro = Text(
        f"Iterative {fmt.joined(sdd.methods)} pruning ({sdd.scope}, "
        f"{sdd.prune_fraction:.0%} of the remaining weights per level, to "
        f"{sdd.final_sparsity:.1%} sparsity), retraining by {fmt.joined(sdd.modes)}; "
        f"seeds {fmt.joined(sdd.seeds)}."
    )
    return sec.finish("Sparse double descent", intro)
