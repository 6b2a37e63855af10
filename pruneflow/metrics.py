"""Headline figures as DVC metrics: small JSON objects that ``dvc metrics show`` lists and
``dvc metrics diff`` compares across commits and experiments.

The Parquet tables stay the record; these are the few numbers a reader compares first.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pruneflow import layout

DIGITS = 5  # enough to see a 0.01 % accuracy change, few enough to read


def _mean(values: pd.Series) -> float | None:
    values = values.dropna()
    return round(float(values.mean()), DIGITS) if len(values) else None


def spdy_metrics(results: pd.DataFrame, oneshot: pd.DataFrame) -> dict[str, Any]:
    """SPDY per profile and speedup target: ``{"spdy": {"2.0x": {...}}, "dense_acc": ...}``.

    From gradual pruning (``results``, means over seeds): test accuracy, its spread over seeds,
    the predicted and the measured end-to-end speedup. From the one-shot comparison
    (``oneshot``): the calibration loss and test accuracy of the profile stitched from the
    reconstruction database, before any fine-tuning. A profile only in one of the two tables
    (``prior`` is one-shot only) gets that table's figures.
    """
    out: dict[str, Any] = {
        "dense_acc": _mean(results["dense_acc"]),
        "seeds": int(results["seed"].nunique()),
    }
    for (profile, target), runs in results.groupby(["profile", "target"], sort=True):
        acc = runs["acc"]
        out.setdefault(profile, {})[layout.target_name(target)] = {
            "acc": _mean(acc),
            "acc_std": round(float(acc.std(ddof=1)), DIGITS) if len(acc) > 1 else None,
            "predicted_speedup": _mean(runs["predicted_speedup"]),
            "measured_speedup": _mean(runs["measured_speedup"]),
        }
    for row in oneshot.itertuples():
        figures = out.setdefault(row.profile, {}).setdefault(layout.target_name(row.target), {})
        figures["oneshot_calib_loss"] = round(float(row.calib_loss), DIGITS)
        figures["oneshot_acc"] = round(float(row.test_acc), DIGITS)
    return out
