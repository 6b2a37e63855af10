"""The comparison table and its figures: accuracy vs FLOPs per method, and the per-layer channel
counts CHEX chose next to the uniform widths of the baselines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pruneflow.io import atomic_path, read_json
from pruneflow.value_checks import ValueRanges

COMPARISON_COLUMNS = {
    "method": "O",
    "flops_reduction_target": "f",
    "flops_reduction": "f",
    "seed": "iu",
    "test_acc": "f",
}
# what a comparison run's record may hold (pruneflow.chex.methods.RunResult), and the tables
# made from the records: their readers refuse anything else
RUN_VALUES = ValueRanges(
    fractions=("target", "test_acc", "val_acc"),
    non_negative=("test_loss",),
    positive=("flops", "flops_dense", "params", "params_dense"),
    finite=("flops_reduction",),
)
TABLE_VALUES = ValueRanges(
    fractions=("flops_reduction_target", "test_acc", "val_acc"),
    positive=("flops", "params"),
    finite=("flops_reduction",),
)


def read_run_record(path: Path) -> dict[str, Any]:
    """One comparison run's JSON record, its values range-checked."""
    record = read_json(path)
    RUN_VALUES.check_record(record, path)
    return record


_VARIANT_LABELS = {
    "full": "CHEX",
    "no_realloc": "no re-allocation\n(uniform widths)",
    "no_regrow": "no regrowing",
    "explore_25": "T_max = 25%\nof training",
    "explore_75": "T_max = 75%\nof training",
    "mask_at_init": "uniform widths,\nmasked at init",
    "arch_scratch": "CHEX's widths,\nfrom scratch",
}
_STYLE = {
    "chex": ("tab:red", "o"),
    "static": ("tab:blue", "s"),
    "l1_norm": ("tab:green", "^"),
    "slimming": ("tab:purple", "v"),
}


def comparison_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per pruned run (dense reference runs are left out)."""
    rows = [
        {
            "method": r["method"],
            "flops_reduction_target": float(r["target"]),
            "flops_reduction": float(r["flops_reduction"]),
            "seed": int(r["seed"]),
            "test_acc": float(r["test_acc"]),
            "val_acc": float(r["val_acc"]),
            "flops": int(r["flops"]),
            "params": int(r["params"]),
        }
        for r in records
        if r["method"] != "dense"
    ]
    frame = pd.DataFrame(rows, columns=[*COMPARISON_COLUMNS, "val_acc", "flops", "params"])
    return frame.astype({"method": object, "seed": "int64"})


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and range of test accuracy per (method, target)."""
    grouped = frame.groupby(["flops_reduction_target", "method"], sort=True)
    out = grouped.agg(
        flops_reduction=("flops_reduction", "mean"),
        test_acc_mean=("test_acc", "mean"),
        test_acc_std=("test_acc", "std"),
        test_acc_min=("test_acc", "min"),
        test_acc_max=("test_acc", "max"),
        seeds=("seed", "count"),
    )
    return out.reset_index()


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_accuracy(
    frame: pd.DataFrame, dense_acc: Sequence[float], dense_flops: float, path: Path, title: str
) -> None:
    """Test accuracy (mean, whiskers min..max over seeds) against FLOPs per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method, rows in frame.groupby("method"):
        color, marker = _STYLE.get(method, ("gray", "x"))
        stats = rows.groupby("flops_reduction_target").agg(
            flops=("flops", "mean"),
            mean=("test_acc", "mean"),
            low=("test_acc", "min"),
            high=("test_acc", "max"),
        )
        mean = 100 * stats["mean"].to_numpy()
        err = 100 * np.vstack([stats["mean"] - stats["low"], stats["high"] - stats["mean"]])
        ax.errorbar(
            stats["flops"] / 1e6,
            mean,
            yerr=err,
            color=color,
            marker=marker,
            capsize=3,
            label=method,
        )
    if len(dense_acc):
        acc = 100 * np.asarray(dense_acc)
        ax.errorbar(
            [dense_flops / 1e6],
            [acc.mean()],
            yerr=[[acc.mean() - acc.min()], [acc.max() - acc.mean()]],
            color="black",
            marker="*",
            markersize=10,
            capsize=3,
            linestyle="none",
            label=f"dense ({acc.mean():.2f}%)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per image (MFLOPs, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _save(fig, path)
    plt.close(fig)


def plot_channels(records: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Per-group channel counts: dense, the uniform baseline widths, and CHEX (mean, min..max
    over seeds), one panel per FLOPs target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted({float(r["target"]) for r in records if r["method"] != "dense"})
    fig, axes = plt.subplots(
        1, max(len(targets), 1), figsize=(5.5 * max(len(targets), 1), 4.2), squeeze=False
    )
    for ax, target in zip(axes[0], targets, strict=False):
        chex = [r for r in records if r["method"] == "chex" and float(r["target"]) == target]
        uniform = [
            r
            for r in records
            if r["method"] in ("static", "l1_norm") and float(r["target"]) == target
        ]
        ref = (chex or uniform)[0]
        names = list(ref["sizes"])
        x = np.arange(len(names))
        ax.bar(
            x,
            [ref["sizes"][n] for n in names],
            width=0.8,
            color="none",
            edgecolor="gray",
            label="dense",
        )
        if uniform:
            ax.bar(
                x - 0.2,
                [uniform[0]["channels"][n] for n in names],
                width=0.4,
                color="tab:blue",
                label="static / l1_norm (uniform)",
            )
        if chex:
            counts = np.array([[r["channels"][n] for n in names] for r in chex], dtype=float)
            mean = counts.mean(0)
            ax.bar(
                x + 0.2,
                mean,
                width=0.4,
                color="tab:red",
                yerr=[mean - counts.min(0), counts.max(0) - mean],
                capsize=3,
                label=f"CHEX (mean of {len(chex)} seeds)",
            )
        ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
        ax.set_xlabel("channel group (first conv)")
        ax.set_ylabel("channels kept")
        ax.set_title(f"-{target:.0%} FLOPs")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)


ABLATION_COLUMNS = {
    "method": "O",
    "variant": "O",  # "full" for plain CHEX, the ablation's name, "" for the baselines
    "flops_reduction_target": "f",
    "flops_reduction": "f",
    "seed": "iu",
    "test_acc": "f",
}


def ablation_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """CHEX (``variant`` "full") and its ablations, with the baselines at the same targets.

    The columns of :data:`ABLATION_COLUMNS`; no rows when no ablation ran.
    """
    targets = {float(r["target"]) for r in records if r.get("variant")}
    rows = []
    for r in records:
        if r["method"] == "dense" or float(r["target"]) not in targets:
            continue
        name = r.get("variant") or ("full" if r["method"] == "chex" else None)
        rows.append(
            {
                "method": r["method"],
                "variant": name or "",
                "flops_reduction_target": float(r["target"]),
                "flops_reduction": float(r["flops_reduction"]),
                "seed": int(r["seed"]),
                "test_acc": float(r["test_acc"]),
            }
        )
    frame = pd.DataFrame(rows, columns=list(ABLATION_COLUMNS))
    return frame.astype(
        {
            "method": object,
            "variant": object,
            "flops_reduction_target": "float64",
            "flops_reduction": "float64",
            "seed": "int64",
            "test_acc": "float64",
        }
    )


def plot_ablation(frame: pd.DataFrame, path: Path, title: str) -> None:
    """Test accuracy of CHEX and each ablation (bars: mean, whiskers: min..max, dots: seeds),
    with the baselines' means as horizontal lines, one panel per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted(frame["flops_reduction_target"].unique())
    if not targets:  # no ablation configured: the figure says so
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        ax.text(0.5, 0.5, "no ablations run\n(chex.compare.ablations is empty)", ha="center")
        ax.set_axis_off()
        fig.suptitle(title)
        _save(fig, path)
        plt.close(fig)
        return
    fig, axes = plt.subplots(1, len(targets), figsize=(5.5 * len(targets), 4.2), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        rows = frame[frame["flops_reduction_target"] == target]
        chex = rows[rows["method"] == "chex"]
        present = set(chex["variant"])
        order = [v for v in _VARIANT_LABELS if v in present] + sorted(
            present - set(_VARIANT_LABELS)
        )
        for i, variant in enumerate(order):
            acc = 100 * chex.loc[chex["variant"] == variant, "test_acc"].to_numpy()
            ax.bar(
                i,
                acc.mean(),
                color="tab:red" if variant == "full" else "salmon",
                yerr=[[acc.mean() - acc.min()], [acc.max() - acc.mean()]],
                capsize=3,
            )
            ax.plot([i] * len(acc), acc, "k.", markersize=4)
        for method in ("static", "l1_norm", "slimming"):
            acc = rows.loc[rows["method"] == method, "test_acc"]
            if len(acc):
                color = _STYLE[method][0]
                ax.axhline(
                    100 * acc.mean(),
                    color=color,
                    linestyle="--",
                    label=f"{method} ({100 * acc.mean():.2f}%)",
                )
        low = 100 * rows["test_acc"].min()
        ax.set_ylim(low - 1.0, 100 * rows["test_acc"].max() + 0.5)
        ax.set_xticks(
            range(len(order)), [_VARIANT_LABELS.get(v, v) for v in order], rotation=30, fontsize=8
        )
        ax.set_xlabel("CHEX variant")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"-{target:.0%} FLOPs")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)


def plot_exploration(records: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """How CHEX's sub-model evolved (first seed per target): channels allocated per group as a
    share of its width, and how many regrown channels the next selection kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        if r["method"] == "chex" and r.get("exploration"):
            runs.setdefault(float(r["target"]), r)
    if not runs:  # nothing explored (no CHEX run): an empty figure says so
        fig, ax = plt.subplots()
        ax.set_title("no CHEX runs to show")
        _save(fig, path)
        plt.close(fig)
        return
    fig, axes = plt.subplots(2, len(runs), figsize=(5.5 * len(runs), 7), squeeze=False)
    for col, (target, run) in enumerate(sorted(runs.items())):
        steps = pd.DataFrame(run["exploration"])
        top, bottom = axes[0][col], axes[1][col]
        for group, rows in steps.groupby("group", sort=False):
            top.plot(rows["step"], 100 * rows["allocated"] / rows["size"], marker=".", label=group)
        top.set_xlabel("prune/regrow step")
        top.set_ylabel("channels allocated (% of the group)")
        top.set_title(f"-{target:.0%} FLOPs, seed {run['seed']}")
        top.legend(fontsize=7)
        per_step = steps.groupby("step")[["regrown", "kept_regrown"]].sum()
        bottom.bar(per_step.index - 0.2, per_step["regrown"], width=0.4, label="regrown")
        bottom.bar(
            per_step.index + 0.2,
            per_step["kept_regrown"].shift(-1),
            width=0.4,
            label="of those, kept at the next step",
        )
        bottom.set_xlabel("prune/regrow step")
        bottom.set_ylabel("channels (all groups)")
        bottom.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)
