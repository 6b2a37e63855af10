"""The comparison's summary: per method and target over fine-tuning seeds, n, the mean test
accuracy with its 95% interval and the paired difference to the search
(:mod:`pruneflow.stats`), the predicted and the median measured speedup."""

from __future__ import annotations

import math

import pandas as pd

from pruneflow.config import Params
from pruneflow.io import parquet_metadata, read_parquet
from pruneflow.stats import mean_interval, paired_by_seed
from pruneflow.structured import paths

__all__ = ["read_comparison", "summarize"]


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method and target: n, mean test accuracy [95%], paired difference to the search."""
    rows = []
    for (method, target), runs in frame.groupby(["method", "target"], sort=False):
        test_size = int(runs["test_size"].iloc[0]) if "test_size" in runs else None
        est = mean_interval(runs["test_acc"].tolist(), test_size)
        search = frame[(frame["method"] == "search") & (frame["target"] == target)]
        diff = None
        if method != "search" and not search.empty:
            diff = paired_by_seed(
                dict(zip(runs["seed"], runs["test_acc"], strict=True)),
                dict(zip(search["seed"], search["test_acc"], strict=True)),
                test_size,
            )
        measured = float(runs["measured_speedup"].median())
        rows.append(
            {
                "method": method,
                "target": float(target),
                "n": est.n,
                "test_acc_mean": est.mean,
                "test_acc_low": est.low,
                "test_acc_high": est.high,
                "diff_vs_search": diff.mean if diff else math.nan,
                "diff_low": diff.low if diff else math.nan,
                "diff_high": diff.high if diff else math.nan,
                "predicted_speedup": float(runs["predicted_speedup"].iloc[0]),
                "predictor": runs["predictor"].iloc[0],
                "measured_speedup": measured,
                "measured_vs_target": measured / float(target),
            }
        )
    return pd.DataFrame(rows, columns=list(paths.SUMMARY_COLUMNS))


def read_comparison(p: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """comparison.parquet's runs and its summary (the report reads them)."""
    frame = read_parquet(paths.comparison_table(p), paths.COMPARISON_COLUMNS)
    summary = pd.DataFrame(parquet_metadata(paths.comparison_table(p))["summary"])
    return frame, summary.reindex(columns=list(paths.SUMMARY_COLUMNS))
