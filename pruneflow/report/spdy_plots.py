"""The report's SPDY figures that the SPDY steps do not draw: the timing table as a heat map,
and accuracy against speedup (one-shot and after gradual pruning). The search's convergence and
the chosen profiles are drawn by :mod:`pruneflow.spdy.plots`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pruneflow.figures import new_figure, save_figure
from pruneflow.timing.table import time_matrix

PROFILE_STYLE = {  # colour and marker per profile, the same in every SPDY figure of the report
    "spdy": ("tab:red", "o"),
    "uniform": ("tab:blue", "s"),
    "gmp": ("tab:green", "^"),
    "prior": ("tab:gray", "D"),
}
PROFILE_LABELS = {
    "spdy": "SPDY",
    "uniform": "uniform",
    "gmp": "global magnitude (GMP)",
    "prior": "error prior only",
}


def _pct_label(value: float) -> str:
    """``56``, ``97.5``: whole percent until the levels crowd together near 100 %."""
    return f"{value:.0f}" if value < 90 else f"{value:.1f}"


def timing_heatmap(table: pd.DataFrame, meta: Mapping[str, Any], model: str, path: Path) -> Path:
    """Layers (rows, model order) x sparsity levels (columns), time in ms on a log colour scale."""
    # matplotlib is imported where a figure is drawn (pruneflow.figures)
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    layers = list(table.sort_values("layer_index").drop_duplicates("layer")["layer"])
    levels = [float(s) for s in meta["levels"]]
    times = time_matrix(table, layers)
    positive = times[times > 0]
    low = float(positive.min()) if positive.size else 1e-3
    high = max(float(times.max()), low * 1.001)
    fig = new_figure(layout="constrained", figsize=(10.5, max(3.0, 1.5 + 0.34 * len(layers))))
    ax = fig.subplots()
    image = ax.imshow(
        np.maximum(times, low),
        aspect="auto",
        cmap="viridis",
        norm=LogNorm(vmin=low, vmax=high),
        interpolation="nearest",
    )
    ticks = np.unique(np.linspace(0, len(levels) - 1, min(len(levels), 12)).round().astype(int))
    ax.set_xticks(ticks, [_pct_label(100 * levels[i]) for i in ticks])
    ax.set_xlabel("sparsity of the layer (% of weights removed; leftmost column: dense)")
    ax.set_yticks(range(len(layers)), layers)
    ax.set_ylabel("layer")
    bar = fig.colorbar(image, ax=ax, pad=0.01)
    bar.ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    bar.ax.yaxis.set_minor_formatter(NullFormatter())
    bar.set_label(f"time per batch of {meta['batch_size']} (ms, log scale)")
    host = meta.get("host", {})
    cpu = str(host.get("cpu", meta.get("device", "?")))[:48]
    ax.set_title(
        f"{model}: layer time by sparsity level ({meta['threads']} thread(s), {cpu})", fontsize=11
    )
    return save_figure(fig, path)


def accuracy_vs_speedup(
    frame: pd.DataFrame,
    x: str,
    y: str,
    path: Path,
    xlabel: str,
    title: str,
    profiles: Sequence[str],
    dense: Mapping[str, float] | None = None,
) -> Path:
    """Accuracy (mean, whiskers: std over seeds) per profile against a speedup column; one panel
    per model; ``dense``: model -> dense accuracy, drawn as a dashed line."""
    models = list(dict.fromkeys(frame["model"]))
    fig = new_figure(layout="constrained", figsize=(6.0 * len(models), 4.2))
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models, strict=True):
        rows = frame[frame["model"] == model]
        for profile in profiles:
            sub = rows[rows["profile"] == profile]
            if sub.empty:
                continue
            stats = (
                sub.groupby("target")
                .agg(x=(x, "mean"), acc=(y, "mean"), std=(y, "std"))
                .sort_values("x")
            )
            color, marker = PROFILE_STYLE.get(profile, ("black", "x"))
            ax.errorbar(
                stats["x"],
                100 * stats["acc"],
                yerr=100 * stats["std"].fillna(0.0),
                color=color,
                marker=marker,
                capsize=3,
                label=PROFILE_LABELS.get(profile, profile),
            )
        if dense and model in dense:
            ax.axhline(
                100 * dense[model],
                color="black",
                ls="--",
                lw=1,
                label=f"dense ({100 * dense[model]:.2f}%)",
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{model}: {title}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)
