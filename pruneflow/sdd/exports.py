"""Small CSV exports of the sweep's curves, for DVC's ``plots`` (DVC cannot read Parquet).

One long-format CSV per figure, one row per point, a ``curve`` column naming the line it
belongs to; ``dvc.yaml`` draws each with the Vega-Lite template :data:`TEMPLATE` (a line per
``curve``, x = :data:`X`). Written atomically, always the same four files whatever
``sdd.methods`` / ``sdd.modes`` / ``sdd.seeds`` hold:

``test_acc.csv``           test accuracy (clean labels) per (method, retrain, seed) curve
``train_acc.csv``          train accuracy on the noisy labels trained on and on the true ones,
                           per curve (``labels``: noisy / true)
``learning_distance.csv``  the L2 learning distance per curve
``lottery.csv``            rewind vs reinit test accuracy, seed means (from
                           :func:`pruneflow.sdd.sweep.lottery_table`); only the mode that ran
                           when one did, no rows when neither did

Every file has ``curve``, ``method``, ``retrain``, ``level``, ``sparsity`` (measured from the
masks), ``remaining_pct``, ``sparsity_nines`` = -log10(1 - sparsity) (1 = 90 %, 2 = 99 %,
3 = 99.9 %: sparsity on a log scale of the remaining weights, as the paper plots it; DVC's
templates have no log axis) and ``phase``; the per-seed files a ``seed``, ``lottery.csv``
``n_seeds``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pruneflow.io import atomic_path
from pruneflow.sdd.sweep import LOTTERY_MODES, lottery_table

# the x column of every export, and the Vega-Lite template dvc.yaml draws them with
X = "sparsity_nines"
TEMPLATE = Path(__file__).with_name("dvc_curves.json")
FILES = ("test_acc", "train_acc", "learning_distance", "lottery")
_AXIS = ["level", "sparsity", "remaining_pct", X]


def _axis(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    remaining = (1.0 - frame["sparsity"].astype(float)).clip(lower=1e-12)
    frame["remaining_pct"] = 100.0 * remaining
    frame[X] = -np.log10(remaining) + 0.0  # + 0.0: no "-0.0" at the dense point
    return frame


def _name(method: str, retrain: str, seed: int) -> str:
    return f"{method}/{retrain}/seed{int(seed)}"


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return path


def curve_frames(table: pd.DataFrame, phases: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The four exports as frames (``table`` / ``phases``: sweep.parquet / phases.parquet)."""
    base = _axis(table)
    base["curve"] = [
        _name(m, r, s)
        for m, r, s in zip(base["method"], base["retrain"], base["seed"], strict=True)
    ]
    keys = ["curve", "method", "retrain", "seed", *_AXIS]
    out = {
        "test_acc": base[[*keys, "test_acc", "phase"]],
        "learning_distance": base[[*keys, "learning_distance", "phase"]],
    }
    train = []
    for labels in ("noisy", "true"):
        part = base[[*keys, f"train_acc_{labels}", "phase"]].rename(
            columns={f"train_acc_{labels}": "train_acc"}
        )
        part.insert(4, "labels", labels)
        part["curve"] = part["curve"] + f" {labels} labels"
        train.append(part)
    out["train_acc"] = pd.concat(train, ignore_index=True)
    lottery = lottery_table(table, phases)
    rows = []
    for mode in LOTTERY_MODES:
        part = lottery[lottery[f"{mode}_test_acc"].notna()]
        rows.append(
            pd.DataFrame(
                {
                    "curve": part["method"] + f" {mode}",
                    "method": part["method"],
                    "retrain": mode,
                    "level": part["level"],
                    "sparsity": part["sparsity"],
                    "test_acc": part[f"{mode}_test_acc"],
                    "n_seeds": part["n_seeds"],
                    "phase": part[f"{mode}_phase"],
                }
            )
        )
    lot = _axis(pd.concat(rows, ignore_index=True))
    out["lottery"] = lot[
        ["curve", "method", "retrain", *_AXIS, "test_acc", "n_seeds", "phase"]
    ].astype({"level": "int64", "n_seeds": "int64"})
    return out


def write_curves(table: pd.DataFrame, phases: pd.DataFrame, files: dict[str, Path]) -> None:
    """Write the exports to ``files`` (name -> path, names :data:`FILES`)."""
    frames = curve_frames(table, phases)
    for name in FILES:
        _write_csv(frames[name], files[name])
