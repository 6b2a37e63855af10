"""Figures of the sweep (matplotlib's Agg canvas, PNG, written atomically).

x axis everywhere: remaining weights in % on a log scale, running from dense (100 %) on the
left to the sparsest level on the right, so sparsity grows to the right as in the paper.
Curves are seed means. The test-accuracy band is its 95% interval
(:func:`pruneflow.sdd.sweep.curve_intervals`: seed spread and the test sample's binomial
error); the training-set curves' bands are the seed range.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pruneflow.config import SDD_METHODS, SDD_MODES
from pruneflow.figures import new_figure, save_figure
from pruneflow.sdd.sweep import (
    LOTTERY_MODES,
    curve_intervals,
    curve_phases,
    lottery_table,
    mean_curves,
)

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn (pruneflow.figures)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

PHASE_COLORS = {
    "light": "#c6dbef",
    "critical": "#fdae6b",
    "sweet": "#a1d99b",
    "collapsed": "#bdbdbd",
}
PHASE_TITLES = {
    "light": "I light",
    "critical": "II critical",
    "sweet": "III sweet",
    "collapsed": "IV collapsed",
}


def _remaining(sparsity: pd.Series | np.ndarray) -> np.ndarray:
    return 100.0 * (1.0 - np.asarray(sparsity, dtype=float))


def _x_axis(ax: Axes, remaining: np.ndarray) -> None:
    from matplotlib.ticker import FuncFormatter  # imported where drawn (pruneflow.figures)

    ax.set_xscale("log")
    ax.set_xlim(remaining.max() * 1.15, remaining.min() / 1.15)  # inverted: sparser to the right
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("remaining weights (%, log scale)")
    ax.grid(True, which="major", alpha=0.3)


def _shade(ax: Axes, curve: pd.DataFrame, phase_rows: pd.DataFrame) -> list[Patch]:
    """Shade each phase between the geometric midpoints of its edge levels."""
    from matplotlib.patches import Patch  # imported where drawn (pruneflow.figures)

    rem = dict(zip(curve["level"], _remaining(curve["sparsity"]), strict=True))
    levels = sorted(rem)
    handles = []
    for row in phase_rows.itertuples():
        first, last = int(row.first_level), int(row.last_level)
        left = rem[first] * 1.15 if first == levels[0] else np.sqrt(rem[first] * rem[first - 1])
        right = rem[last] / 1.15 if last == levels[-1] else np.sqrt(rem[last] * rem[last + 1])
        ax.axvspan(left, right, color=PHASE_COLORS[row.phase], alpha=0.35, lw=0)
        handles.append(
            Patch(color=PHASE_COLORS[row.phase], alpha=0.35, label=PHASE_TITLES[row.phase])
        )
    return handles


def _band(ax: Axes, table: pd.DataFrame, method: str, retrain: str, col: str, color: str) -> None:
    rows = table[(table["method"] == method) & (table["retrain"] == retrain)]
    if rows["seed"].nunique() < 2:
        return
    g = rows.groupby("level")
    lo, hi = g[col].min() * 100, g[col].max() * 100
    x = _remaining(g["sparsity"].mean())
    ax.fill_between(x, lo.to_numpy(), hi.to_numpy(), color=color, alpha=0.15, lw=0)


def _ordered(values: pd.Series, order: tuple[str, ...]) -> list[str]:
    present = set(values)
    return [v for v in order if v in present] + sorted(present - set(order))


def _grid(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Panels: one row per method, one column per retrain mode, in the params' canonical order."""
    return _ordered(table["method"], SDD_METHODS), _ordered(table["retrain"], SDD_MODES)


def _panels(table: pd.DataFrame, phases: pd.DataFrame) -> tuple[Figure, list[tuple]]:
    """A figure with one panel per (method, retrain mode), each with its seed-mean curve, the
    x values (remaining weights) and the legend patches of its shaded phases."""
    methods, modes = _grid(table)
    means = mean_curves(table)
    fig = new_figure(figsize=(5.2 * len(modes), 3.8 * len(methods)), layout="constrained")
    axes = fig.subplots(len(methods), len(modes), squeeze=False)
    panels = []
    for i, method in enumerate(methods):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            curve = means[(means["method"] == method) & (means["retrain"] == mode)]
            patches = _shade(ax, curve, curve_phases(phases, method, mode))
            panels.append((ax, method, mode, curve, _remaining(curve["sparsity"]), patches))
    return fig, panels


_TRAIN_CURVES = (
    ("train_acc_noisy", "train acc (noisy labels)", "tab:orange", "--"),
    ("noise_fit", "flipped labels memorised", "tab:red", "-."),
    ("train_acc_true", "train acc (true labels)", "tab:green", ":"),
)


def accuracy_figure(table: pd.DataFrame, phases: pd.DataFrame, path: Path, title: str) -> Path:
    """Test accuracy (with its 95% interval) beside the fit of the noisy labels: train
    accuracy on the noisy labels, the share of flipped labels memorised (``noise_fit``), and
    train accuracy on the true labels, against remaining weights, phases shaded."""
    fig, panels = _panels(table, phases)
    for ax, method, mode, curve, x, patches in panels:
        for col, label, color, style in _TRAIN_CURVES:
            if col not in curve.columns or curve[col].isna().all():
                continue  # noise_fit without label noise
            ax.plot(x, curve[col] * 100, style, color=color, marker=".", label=label, lw=1)
            _band(ax, table, method, mode, col, color)
        ax.plot(
            x,
            curve["test_acc"] * 100,
            "-",
            color="tab:blue",
            marker="o",
            ms=3,
            lw=2,
            label="test acc (seed mean, 95% interval)",
        )
        ci = curve_intervals(table, method, mode).set_index("level").reindex(curve["level"])
        ax.fill_between(
            x,
            ci["low"].to_numpy() * 100,
            ci["high"].to_numpy() * 100,
            color="tab:blue",
            alpha=0.2,
            lw=0,
        )
        _x_axis(ax, x)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{method} pruning, {mode}")
        lines, _ = ax.get_legend_handles_labels()
        ax.legend(handles=lines + patches, fontsize=7, loc="best")
    fig.suptitle(title)
    return save_figure(fig, path)


def distance_figure(table: pd.DataFrame, phases: pd.DataFrame, path: Path, title: str) -> Path:
    """L2 learning distance (left axis) beside test accuracy (right axis)."""
    fig, panels = _panels(table, phases)
    for ax, method, mode, curve, x, patches in panels:
        ax.plot(
            x,
            curve["learning_distance"],
            "-",
            color="tab:blue",
            marker=".",
            label="learning distance",
        )
        ax.set_ylabel("L2 learning distance ||w_start - w_learned||")
        _x_axis(ax, x)
        right = ax.twinx()
        right.plot(x, curve["test_acc"] * 100, "-", color="tab:red", marker=".", label="test acc")
        right.set_ylabel("test accuracy (%)")
        ax.set_title(f"{method} pruning, {mode}")
        lines = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(handles=lines + patches, fontsize=7, loc="best")
    fig.suptitle(title)
    return save_figure(fig, path)


def lottery_figure(table: pd.DataFrame, phases: pd.DataFrame, path: Path, title: str) -> Path:
    """Test accuracy of lottery tickets (rewind) vs random re-initialisation, per method.

    Always written: when ``sdd.modes`` lacks one of the two modes the figure shows the one
    that ran and names the missing one; with neither it says there is nothing to compare.
    """
    comparison = lottery_table(table, phases)
    methods = _ordered(comparison["method"], SDD_METHODS) or ["-"]
    fig = new_figure(figsize=(5.6 * len(methods), 3.8), layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    styles = {
        "rewind": ("tab:purple", "rewind (lottery ticket)"),
        "reinit": ("tab:gray", "random re-init"),
    }
    for ax, method in zip(axes, methods, strict=True):
        rows = comparison[comparison["method"] == method]
        ran = [m for m in LOTTERY_MODES if rows[f"{m}_test_acc"].notna().any()]
        missing = [m for m in LOTTERY_MODES if m not in ran]
        if not ran:
            ax.text(
                0.5,
                0.5,
                "sdd.modes has neither rewind nor reinit:\nnothing to compare",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            ax.set_axis_off()
            continue
        x = rows["remaining_pct"].to_numpy()
        for mode in ran:
            color, label = styles[mode]
            acc = rows[f"{mode}_test_acc"].to_numpy() * 100
            ax.plot(x, acc, "-", marker=".", color=color, label=label)
        if not missing:
            better = rows["reinit_minus_rewind"].to_numpy() > 0
            ax.scatter(
                x[better],
                rows["reinit_test_acc"].to_numpy()[better] * 100,
                s=40,
                facecolors="none",
                edgecolors="black",
                label="re-init beats rewind",
            )
        _x_axis(ax, x)
        ax.set_ylabel("test accuracy (%)")
        what = "lottery ticket vs re-init" if not missing else f"{ran[0]} only"
        ax.set_title(f"{method} pruning: {what}")
        if missing:
            ax.text(
                0.02,
                0.02,
                f"{missing[0]} not in sdd.modes: nothing to compare with",
                fontsize=7,
                transform=ax.transAxes,
            )
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_title(p: Any, meta: dict[str, Any]) -> str:
    """``lenet300100 on mnist5k, 20% symmetric label noise``: the noise the sweep ran with."""
    return (
        f"{p.model.name} on {p.data.dataset}, {float(meta['noise_rate']):.0%} "
        f"{meta['noise_kind']} label noise"
    )
