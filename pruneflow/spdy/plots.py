"""Figures of SPDY's search and of the profiles it chose (PNG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pruneflow.figures import new_figure, save_figure

PROFILE_STYLES = {"spdy": "-", "uniform": ":", "gmp": "--", "prior": "-."}


def plot_search(histories: Mapping[float, pd.DataFrame], model: str, path: str | Path) -> Path:
    """Best calibration loss against candidates, one line per target; the local phase shaded.

    ``histories``: target -> search.parquet frame (columns eval, phase, best, new_profile).
    """
    fig = new_figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    for target, frame in sorted(histories.items()):
        line = ax.plot(frame["eval"] + 1, frame["best"], label=f"{target:g}x", lw=1.6)[0]
        local = frame.loc[frame["phase"] == "local", "eval"]
        if len(local):
            ax.axvline(int(local.iloc[0]) + 1, color=line.get_color(), ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("candidates evaluated (log scale; dotted: local search starts)")
    ax.set_ylabel("best calibration loss (cross-entropy)")
    ax.set_title(f"SPDY search on {model}: best loss so far, per speedup target")
    ax.grid(alpha=0.3)
    ax.legend(title="target")
    return save_figure(fig, path)


def plot_profiles(
    profiles: pd.DataFrame, layers: Sequence[str], model: str, path: str | Path
) -> Path:
    """Sparsity per layer of every (target, profile) in ``profiles`` (profiles.parquet rows)."""
    targets = sorted(profiles["target"].unique())
    fig = new_figure(figsize=(max(6.0, 0.9 * len(layers) + 2), 4.5))
    ax = fig.add_subplot()
    x = np.arange(len(layers))
    colors = {t: f"C{i}" for i, t in enumerate(targets)}
    for (target, name), part in profiles.groupby(["target", "profile"], sort=True):
        part = part.set_index("layer").loc[list(layers)]
        ax.plot(
            x,
            100 * part["sparsity"],
            PROFILE_STYLES.get(name, "-"),
            marker="o",
            ms=3,
            color=colors[target],
            lw=2.0 if name == "spdy" else 1.0,
            label=f"{name} {target:g}x",
        )
    ax.set_xticks(x, list(layers), rotation=30, ha="right")
    ax.set_xlabel("layer (forward order)")
    ax.set_ylabel("sparsity (%)")
    ax.set_title(f"{model}: per-layer sparsity of each profile (colour: target)")
    ax.grid(alpha=0.3)
    ax.legend(ncol=max(1, len(targets)), fontsize=7)
    return save_figure(fig, path)
