"""Comparison tables that state n, the mean with its 95% interval and the paired difference.

One helper for every method's section, so each comparison in the report reads the same way:
per group (a target, a FLOPs budget, a sparsity) and method, the number of runs, the mean test
accuracy with its interval (:func:`pruneflow.stats.mean_interval`) and the mean paired
difference to the baseline with its interval (:func:`pruneflow.stats.paired_difference`),
runs paired by seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pruneflow.io import read_parquet
from pruneflow.report import fmt
from pruneflow.stats import Estimate, mean_interval, paired_by_seed


def test_size(labels_path: Path) -> int | None:
    """How many test images a data set's ``labels.parquet`` holds (None when absent)."""
    if not labels_path.is_file():
        return None
    frame = read_parquet(labels_path, {"split": "O"})
    return int((frame["split"] == "test").sum())


def paired(
    runs: pd.DataFrame, method: str, baseline: str, *, by: str, value: str, seed: str = "seed"
) -> Estimate | None:
    """``method - baseline`` over the seeds both ran (None when they share no seed)."""
    a = runs[runs[by] == method].set_index(seed)[value].to_dict()
    b = runs[runs[by] == baseline].set_index(seed)[value].to_dict()
    return paired_by_seed(a, b, _size(runs))


def _size(runs: pd.DataFrame) -> int | None:
    return runs.attrs.get("test_size")


def pct_interval(est: Estimate | None, signed: bool = False) -> str:
    """``97.41 [97.02, 97.80]`` in points, or a dash."""
    return fmt.DASH if est is None else est.format(scale=100.0, digits=2, signed=signed)


def comparison_rows(
    runs: pd.DataFrame,
    *,
    group: str,
    method: str,
    methods: Sequence[str],
    baseline: str,
    value: str = "acc",
    labels: dict[str, str] | None = None,
    group_label=fmt.target,
) -> list[list[str]]:
    """Rows ``[group, method, n, mean [95% CI], difference to baseline [95% CI]]``.

    ``runs`` has one row per run (columns ``group``, ``method``, ``seed``, ``value``);
    ``runs.attrs["test_size"]`` (when set) adds the test sample's binomial error to the means.
    """
    labels = labels or {}
    rows = []
    for g, part in sorted(runs.groupby(group), key=lambda kv: kv[0]):
        part.attrs = runs.attrs
        first = True
        for m in methods:
            sub = part[part[method] == m]
            if sub.empty:
                continue
            est = mean_interval(sub[value].tolist(), _size(runs))
            diff = None if m == baseline else paired(part, m, baseline, by=method, value=value)
            rows.append(
                [
                    group_label(g) if first else "",
                    labels.get(m, m),
                    str(len(sub)),
                    pct_interval(est),
                    fmt.DASH if diff is None else pct_interval(diff, signed=True),
                ]
            )
            first = False
    return rows


COMPARISON_NOTE = (
    "n: runs (seeds). Mean test accuracy with its 95% interval (Student t over the seeds, plus "
    "the binomial error of the test sample); difference: mean paired difference to {baseline} "
    "over the seeds both ran, with its 95% paired interval (one seed: both accuracies' binomial "
    "errors). An interval that contains 0 is inconclusive."
)
