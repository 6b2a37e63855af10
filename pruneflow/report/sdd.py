"""The sparse double descent section and its claim (He et al., ICML'22).

The section: the sweep's curves with the four phases shaded, the noisy-label fit beside the
test accuracy, the learning distance, rewind vs re-init; figures drawn by
:mod:`pruneflow.sdd.plots`. Every comparison states n (seeds), the mean, its 95% interval and
a paired difference (:mod:`pruneflow.stats`): each curve's dip, rise and collapse against its
own dense and sweet points, every mode against finetune level by level, re-init against rewind
phase by phase. :func:`sdd_claims` states the paper's claim and the verdict read off the
intervals (:mod:`pruneflow.sdd.evidence`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pruneflow import config
from pruneflow.claims import Claim
from pruneflow.config import SDD_METHODS as METHODS
from pruneflow.config import SDD_MODES as MODES
from pruneflow.config import Params
from pruneflow.report import fmt
from pruneflow.report.doc import Figure, Heading, Note, Table, Text
from pruneflow.report.section import Section
from pruneflow.sdd import plots
from pruneflow.sdd.evidence import MIN_CHANGE, Evidence, descent_evidence
from pruneflow.sdd.paths import phases_file, read_sweep, sweep_file
from pruneflow.sdd.sweep import curve_phases, test_acc_by_seed, test_size
from pruneflow.stats import Estimate, mean_interval, paired_difference

RUN = "uv run pruneflow run sdd"
PAPER = "Sparse double descent (He et al., ICML 2022)"
MAIN_MODE = "finetune"  # the retraining that shows the four phases at the default sizes
CLAIM = (
    "As sparsity grows, test accuracy falls (critical phase), rises again (sweet phase), then "
    "falls (collapse): the four phases, with the critical dip below dense, the sweet rise "
    f"above the dip and the collapse below the sweet spot each at least {100 * MIN_CHANGE:.0f} "
    "points of test accuracy on average and beyond zero by its 95% interval (cross-fitted "
    "over the seeds)"
)


def _remaining(sparsity: float) -> str:
    return f"{100 * (1 - float(sparsity)):.3g}%"


def _est(e: Estimate, signed: bool = False) -> str:
    return e.format(scale=100, digits=2, signed=signed)


def _ordered_curves(table: pd.DataFrame) -> list[tuple[str, str]]:
    order = {name: i for i, name in enumerate((*METHODS, *MODES))}
    pairs = table[["method", "retrain"]].drop_duplicates().itertuples(index=False)
    return sorted(
        ((str(m), str(r)) for m, r in pairs), key=lambda k: (order.get(k[0], 99), order[k[1]])
    )


def main_mode(table: pd.DataFrame) -> str:
    """The retraining mode the claim is read on: finetune, else the first that ran."""
    ran = [m for m in MODES if m in set(table["retrain"])]
    return MAIN_MODE if MAIN_MODE in ran else ran[0]


def _evidence(p: Params, table: pd.DataFrame, method: str, retrain: str) -> Evidence:
    rule = p.sdd.phases  # type: ignore[attr-defined]
    return descent_evidence(table, method, retrain, rule.standard_errors, rule.smooth)


def _point(e: Evidence, point: str) -> str:
    return f"{_est(e.accuracy[point])} at {_remaining(e.sparsity[point])} left"


# ---- the claim -------------------------------------------------------------------------------
def _measured(model: str, e: Evidence) -> str:
    return (
        f"{model}, {e.method} pruning, {e.retrain} retraining, n = {e.n_seeds} seeds, "
        f"{e.test_size} test images; test accuracy (%, mean [95% interval]): dense "
        f"{_est(e.accuracy['dense'])}, critical dip {_point(e, 'valley')} (noisy labels fitted "
        f"{100 * e.noise_fit['valley']:.0f}%), sweet spot {_point(e, 'peak')}, collapse "
        f"{_point(e, 'sparsest')}; paired differences (points): dip "
        f"{_est(e.changes['dip'], True)}, rise {_est(e.changes['rise'], True)}, collapse "
        f"{_est(e.changes['collapse'], True)}; four phases on the seed-mean curve: "
        f"{'yes' if e.double_descent else 'no'}"
    )


def sdd_claims(params: Params) -> list[Claim]:
    """The four-phases claim per (model, pruning method) of the sweep, on the main retraining
    mode (:func:`main_mode`); [] when no sweep table exists yet."""
    claims = []
    for model in params.sdd.models:
        p = config.scoped(params, f"sdd:{model}")
        if not (sweep_file(p).is_file() and phases_file(p).is_file()):
            continue
        table, _, _ = read_sweep(p)
        mode = main_mode(table)
        for method in [m for m in METHODS if m in set(table["method"])]:
            e = _evidence(p, table, method, mode)
            claims.append(
                Claim(
                    paper=PAPER,
                    key=f"sdd.four_phases.{model}.{method}",
                    claim=CLAIM,
                    measured=_measured(model, e),
                    verdict=e.verdict,
                )
            )
    return claims


# ---- tables ----------------------------------------------------------------------------------
def _summary_table(model: str, p: Params, table: pd.DataFrame) -> Table:
    rows = []
    for method, retrain in _ordered_curves(table):
        e = _evidence(p, table, method, retrain)
        rows.append(
            [
                method,
                retrain,
                str(e.n_seeds),
                _est(e.accuracy["dense"]),
                _point(e, "valley"),
                _point(e, "peak"),
                _point(e, "sparsest"),
                _est(e.changes["dip"], True),
                _est(e.changes["rise"], True),
                _est(e.changes["collapse"], True),
                "yes" if e.double_descent else "no",
                e.verdict,
            ]
        )
    return Table(
        f"sdd-summary-{model}",
        f"{model}: test accuracy (%) at the four points of each seed-mean curve, mean [95% "
        "interval], and the paired differences between them (points)",
        [
            "pruning",
            "retraining",
            "n",
            "dense",
            "critical dip",
            "sweet spot",
            "sparsest level",
            "dip (dense − dip)",
            "rise (sweet − dip)",
            "collapse (sweet − sparsest)",
            "four phases",
            f"each change ≥ {100 * MIN_CHANGE:.0f} points",
        ],
        rows,
        note="The dip and the sweet spot are the critical phase's bottom and the sweet phase's "
        "top on the seed-mean curve (without the four phases: the ends of its largest rise). "
        "Intervals: Student t over the seeds plus the test sample's binomial error; "
        "differences are paired by seed and cross-fitted: each seed is read at the dip and "
        "the sweet spot the other seeds' mean curve picks.",
    )


def _phase_table(model: str, table: pd.DataFrame, phases: pd.DataFrame) -> Table:
    rows = []
    for method, retrain in _ordered_curves(table):
        ph = curve_phases(phases, method, retrain)
        means = test_acc_by_seed(table, method, retrain).mean(axis=1)
        for row in ph.sort_values("first_level").itertuples():
            acc = means.loc[int(row.first_level) : int(row.last_level)]
            rows.append(
                [
                    method,
                    retrain,
                    str(row.phase),
                    f"{int(row.first_level)}–{int(row.last_level)}",
                    f"{_remaining(row.start_sparsity)} → {_remaining(row.end_sparsity)}",
                    f"{100 * acc.min():.2f}–{100 * acc.max():.2f}" if len(acc) else fmt.DASH,
                ]
            )
    return Table(
        f"sdd-phases-{model}",
        f"{model}: the four phases (levels, weights left, seed-mean test accuracy range in %)",
        ["pruning", "retraining", "phase", "levels", "weights left", "test acc (%)"],
        rows,
        note="A change between levels counts when it exceeds sdd.phases.standard_errors "
        "standard errors of the difference (binomial error of the test accuracy and spread "
        "over seeds); a curve without a significant second rise has no critical or sweet "
        "phase.",
    )


def _level_table(model: str, table: pd.DataFrame, phases: pd.DataFrame, method: str) -> Table:
    """Every level of one pruning method: the main mode's test accuracy beside its fit of the
    noisy labels, then every other mode against it, paired by seed."""
    size = test_size(table)
    modes = [m for m in MODES if m in set(table[table["method"] == method]["retrain"])]
    main = MAIN_MODE if MAIN_MODE in modes else modes[0]
    others = [m for m in modes if m != main]
    wide = {m: test_acc_by_seed(table, method, m) for m in modes}
    rows_main = table[(table["method"] == method) & (table["retrain"] == main)]
    fit = rows_main.groupby("level")[["train_acc_noisy", "noise_fit", "sparsity"]].mean()
    labels = _phase_by_level(phases, method, main)
    rows = []
    for level in wide[main].index:
        cells = [
            str(int(level)),
            _remaining(fit.at[level, "sparsity"]),
            labels.get(int(level), ""),
            str(wide[main].shape[1]),
            _est(mean_interval(wide[main].loc[level].to_numpy(), size)),
            f"{100 * fit.at[level, 'train_acc_noisy']:.1f}",
            f"{100 * fit.at[level, 'noise_fit']:.1f}"
            if np.isfinite(fit.at[level, "noise_fit"])
            else fmt.DASH,
        ]
        for other in others:
            if level not in wide[other].index:
                cells += [fmt.DASH, fmt.DASH]
                continue
            seeds = wide[main].columns.intersection(wide[other].columns)
            a, b = wide[other].loc[level, seeds].to_numpy(), wide[main].loc[level, seeds]
            cells += [
                _est(mean_interval(a, size)),
                _est(paired_difference(a, b.to_numpy(), size), True),
            ]
        rows.append(cells)
    columns = [
        "level",
        "weights left",
        f"{main} phase",
        "n",
        f"{main} test acc (%)",
        "train acc, noisy labels (%)",
        "flipped labels memorised (%)",
    ]
    for other in others:
        columns += [f"{other} test acc (%)", f"{other} − {main} (points)"]
    return Table(
        f"sdd-levels-{model}-{method}",
        f"{model}, {method} pruning: test accuracy at every level, mean [95% interval], beside "
        f"the {main} net's fit of the noisy training labels (seed means), and each other "
        f"retraining mode against {main}, paired by seed",
        columns,
        rows,
        note="Critical phase: the net still fits (memorises) the noisy labels while its test "
        "accuracy falls; sweet phase: it can no longer memorise them and test accuracy rises.",
    )


def _phase_by_level(phases: pd.DataFrame, method: str, retrain: str) -> dict[int, str]:
    """Level -> phase of the curve shown for (method, retrain) (the seed mean's)."""
    return {
        level: str(row.phase)
        for row in curve_phases(phases, method, retrain).itertuples()
        for level in range(int(row.first_level), int(row.last_level) + 1)
    }


def _lottery_table(model: str, table: pd.DataFrame, phases: pd.DataFrame) -> Table | None:
    """Re-init against rewind per phase of the rewind curve: both share every level's masks."""
    if not {"rewind", "reinit"} <= set(table["retrain"]):
        return None
    size = test_size(table)
    rows = []
    for method in [m for m in METHODS if m in set(table["method"])]:
        rewind = test_acc_by_seed(table, method, "rewind")
        reinit = test_acc_by_seed(table, method, "reinit")
        seeds = rewind.columns.intersection(reinit.columns)
        ph = curve_phases(phases, method, "rewind")
        spans = [
            (str(r.phase), int(r.first_level), int(r.last_level))
            for r in ph.sort_values("first_level").itertuples()
            if r.last_level >= 1
        ]
        for phase, first, last in spans:
            first = max(first, 1)  # level 0 is the shared dense model
            a = reinit.loc[first:last, seeds].mean(axis=0).to_numpy()
            b = rewind.loc[first:last, seeds].mean(axis=0).to_numpy()
            diff = paired_difference(a, b, size)
            rows.append(
                [
                    method,
                    phase,
                    f"{first}–{last}",
                    str(len(seeds)),
                    _est(mean_interval(b, size)),
                    _est(mean_interval(a, size)),
                    _est(diff, True),
                ]
            )
    return Table(
        f"sdd-lottery-{model}",
        f"{model}: rewind (lottery ticket) vs random re-init with the same masks, by phase of "
        "the rewind curve",
        [
            "pruning",
            "phase",
            "levels",
            "n",
            "rewind acc (%)",
            "re-init acc (%)",
            "re-init − rewind (points)",
        ],
        rows,
        note="Per seed, the test accuracy averaged over the phase's pruned levels; mean [95% "
        "interval]; the difference is paired by seed. Re-init retrains the rewind chain's "
        "masks from fresh random weights (He et al.'s re-initialisation).",
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
        title = plots.plot_title(p, meta)
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
                "Test accuracy (seed mean, 95% interval) beside the fit of the noisy training "
                "labels (train accuracy on the noisy labels, share of the flipped labels "
                "memorised) and train accuracy on the true labels, against the weights left "
                "(log scale, sparser to the right), the four phases shaded: I light, "
                "II critical, III sweet, IV collapsed.",
            ),
            Figure(
                f"{stem}-distance",
                f"{stem}-distance.png",
                "Learning distance (L2 between each level's start and trained weights) beside "
                "test accuracy, same phases.",
            ),
            _summary_table(model, p, table),
            _phase_table(model, table, phases),
            *[
                _level_table(model, table, phases, method)
                for method in METHODS
                if method in set(table["method"])
            ],
        ]
        lottery = _lottery_table(model, table, phases)
        if lottery is not None:
            plots.lottery_figure(
                table, phases, figures / f"{stem}-lottery.png", f"Lottery vs re-init: {title}"
            )
            blocks += [
                Figure(
                    f"{stem}-lottery",
                    f"{stem}-lottery.png",
                    "Rewinding to the initial weights (lottery ticket) against re-initialising "
                    "at random with the same masks, at every level; circles: re-init better.",
                ),
                lottery,
            ]
    sdd = params.sdd
    intro = Text(
        f"Iterative {fmt.joined(sdd.methods)} pruning ({sdd.scope}, "
        f"{sdd.prune_fraction:.0%} of the remaining weights per level, to "
        f"{sdd.final_sparsity:.1%} sparsity), retraining by {fmt.joined(sdd.modes)}; "
        f"seeds {fmt.joined(sdd.seeds)}."
    )
    return sec.finish("Sparse double descent", intro)
