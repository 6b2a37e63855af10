"""The sweep table: per-level records gathered into one frame, phases, lottery comparison.

``sweep.parquet`` has one row per (method, retrain, seed, level) with the columns of
:data:`SWEEP_COLUMNS` (plus ``remaining`` weights, ``noise_fit`` and ``train_loss``;
``test_size`` is the number of test images every accuracy was measured on). Level 0 is the
dense model, shared by every (method, retrain) chain of its seed and repeated in each, so each
chain's curve starts at the dense point.

``phases.parquet``: one row per phase occurring in a curve, for every (method, retrain, seed)
curve and, when there are several seeds, for the seed-mean curve (``seed`` null).

``lottery.parquet``: rewind vs reinit per (method, level), :data:`LOTTERY_COLUMNS` whichever
modes ran (see :func:`lottery_table` for what a sweep with one mode or neither holds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from pruneflow.errors import PruneflowError
from pruneflow.sdd.phases import PhaseResult, label_phases, level_standard_errors
from pruneflow.stats import mean_interval
from pruneflow.value_checks import ValueRanges

SWEEP_COLUMNS = {
    "method": "O",
    "retrain": "O",
    "level": "iu",
    "sparsity": "f",
    "train_acc_noisy": "f",
    "train_acc_true": "f",
    "test_acc": "f",
    "test_loss": "f",
    "test_size": "iu",
    "learning_distance": "f",
    "phase": "O",
    "seed": "iu",
}
# what a level's record (and so a sweep row) may hold: its reader refuses anything else
LEVEL_VALUES = ValueRanges(
    fractions=(
        "sparsity",
        "target_sparsity",
        "train_acc_noisy",
        "train_acc_true",
        "noise_fit",
        "test_acc",
    ),
    non_negative=("train_loss", "test_loss", "learning_distance", "final_epoch_loss", "remaining"),
    positive=("test_size",),
    # noise_fit: no flipped labels to fit at 0 % noise; final_epoch_loss: a dense model loaded
    # from the user's weights (sdd.weights) trained no epoch here
    nullable=("noise_fit", "final_epoch_loss"),
)
PHASE_COLUMNS = {
    "method": "O",
    "retrain": "O",
    "seed": "iuf",  # nullable: null marks the seed-mean curve
    "phase": "O",
    "first_level": "iu",
    "last_level": "iu",
    "start_sparsity": "f",
    "end_sparsity": "f",
    "double_descent": "b",
}
# lottery.parquet (see lottery_table): the same columns whichever sdd.modes ran
LOTTERY_MODES = ("rewind", "reinit")
LOTTERY_COLUMNS = {
    "method": "O",
    "level": "iu",
    "sparsity": "f",
    "remaining_pct": "f",
    "rewind_test_acc": "f",  # null where no rewind chain ran
    "reinit_test_acc": "f",  # null where no reinit chain ran
    "reinit_minus_rewind": "f",  # null unless both ran
    "n_seeds": "iu",
}
_LOTTERY_DTYPES = {
    "method": object,
    "level": "int64",
    "sparsity": "float64",
    "remaining_pct": "float64",
    "rewind_test_acc": "float64",
    "reinit_test_acc": "float64",
    "reinit_minus_rewind": "float64",
    "n_seeds": "int64",
}
CURVE = ["method", "retrain", "seed"]
_METRICS = [
    "sparsity",
    "remaining",
    "train_acc_noisy",
    "train_acc_true",
    "noise_fit",
    "train_loss",
    "test_acc",
    "test_loss",
    "learning_distance",
]


def sweep_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Records -> frame ordered by method, retrain, seed, level; every chain must be complete."""
    frame = pd.DataFrame([dict(r) for r in records])
    if frame.empty:
        raise PruneflowError("the sweep has no records to gather")
    needed = [c for c in SWEEP_COLUMNS if c != "phase"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise PruneflowError(f"sweep records lack {', '.join(missing)}")
    frame = frame.sort_values([*CURVE, "level"], kind="stable").reset_index(drop=True)
    if frame.duplicated([*CURVE, "level"]).any():
        raise PruneflowError("sweep records repeat a (method, retrain, seed, level)")
    for key, chain in frame.groupby(CURVE, sort=False):
        levels = chain["level"].to_numpy()
        if levels[0] != 0 or np.any(np.diff(levels) != 1):
            raise PruneflowError(f"sweep chain {key} has levels {levels.tolist()}, not 0, 1, ...")
    for col in _METRICS:
        if col in frame.columns and frame[col].dtype == object:  # None (noise_fit at 0 % noise)
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    columns = [*CURVE, "level", *[c for c in _METRICS if c in frame.columns]]
    frame = frame[columns + [c for c in frame.columns if c not in columns]]
    if frame["test_size"].nunique() != 1:
        raise PruneflowError(
            f"sweep records were scored on different test sets: sizes "
            f"{sorted(frame['test_size'].unique().tolist())}"
        )
    return frame.astype({"level": "int64", "seed": "int64", "test_size": "int64"})


def test_size(table: pd.DataFrame) -> int:
    """The number of test images behind every accuracy of the sweep (one test set)."""
    return int(table["test_size"].iloc[0])


def mean_curves(table: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean of every metric per (method, retrain, level), with ``n_seeds``."""
    metrics = [c for c in _METRICS if c in table.columns]
    grouped = table.groupby(["method", "retrain", "level"], sort=True)
    out = grouped[metrics].mean()
    out["n_seeds"] = grouped["seed"].nunique()
    return out.reset_index()


def test_acc_by_seed(table: pd.DataFrame, method: str, retrain: str) -> pd.DataFrame:
    """One curve's test accuracy as a (level x seed) frame; seeds missing a level are dropped."""
    rows = table[(table["method"] == method) & (table["retrain"] == retrain)]
    wide = rows.pivot(index="level", columns="seed", values="test_acc").sort_index()
    return wide.dropna(axis=1)


def curve_sparsity(table: pd.DataFrame, method: str, retrain: str) -> pd.Series:
    """The measured sparsity per level of one curve (the same for every seed up to a weight)."""
    rows = table[(table["method"] == method) & (table["retrain"] == retrain)]
    return rows.groupby("level")["sparsity"].mean().sort_index()


def curve_intervals(table: pd.DataFrame, method: str, retrain: str) -> pd.DataFrame:
    """Per level of one curve: ``n``, the seed-mean test accuracy and its 95% interval
    (:func:`pruneflow.stats.mean_interval`: seed spread and the test sample's binomial error)."""
    wide = test_acc_by_seed(table, method, retrain)
    size = test_size(table)
    rows = []
    for level, values in wide.iterrows():
        est = mean_interval(values.to_numpy(), size)
        rows.append(
            {"level": int(level), "n": est.n, "mean": est.mean, "low": est.low, "high": est.high}
        )
    return pd.DataFrame(rows, columns=["level", "n", "mean", "low", "high"])


def curve_phase_result(
    table: pd.DataFrame, method: str, retrain: str, standard_errors: float = 1.0, window: int = 1
) -> tuple[PhaseResult, pd.DataFrame]:
    """The phase rule on the seed-mean test-accuracy curve of (method, retrain), its standard
    errors from the seed spread and the test sample; also returns the (level x seed)
    accuracies it was read from (one seed: that seed's curve, binomial error only)."""
    wide = test_acc_by_seed(table, method, retrain)
    sparsity = curve_sparsity(table, method, retrain).reindex(wide.index)
    se = level_standard_errors(wide.to_numpy().T, test_size(table))
    result = label_phases(sparsity, wide.mean(axis=1), se, window, standard_errors)
    return result, wide


def _phase_rows(result: PhaseResult, levels: np.ndarray, sparsity: np.ndarray) -> list:
    return [
        {
            "phase": row["phase"],
            "first_level": int(levels[row["first_index"]]),
            "last_level": int(levels[row["last_index"]]),
            "start_sparsity": row["start_sparsity"],
            "end_sparsity": row["end_sparsity"],
            "double_descent": row["double_descent"],
        }
        for row in result.table(sparsity)
    ]


def add_phases(
    table: pd.DataFrame, standard_errors: float = 1.0, window: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table with a ``phase`` column per row, the phases table) -- see pruneflow.sdd.phases.

    A single seed's curve has the test sample's binomial error at every level; the seed-mean
    curve (with several seeds) adds the spread over the seeds.
    """
    table = table.copy()
    table["phase"] = ""
    size = test_size(table)
    phase_rows: list[dict[str, Any]] = []
    for (method, retrain, seed), curve in table.groupby(CURVE, sort=False):
        se = level_standard_errors(curve["test_acc"].to_numpy()[None, :], size)
        result = label_phases(curve["sparsity"], curve["test_acc"], se, window, standard_errors)
        table.loc[curve.index, "phase"] = result.labels
        rows = _phase_rows(result, curve["level"].to_numpy(), curve["sparsity"].to_numpy())
        phase_rows += [{"method": method, "retrain": retrain, "seed": seed, **r} for r in rows]
    if table["seed"].nunique() > 1:
        for method, retrain in (
            table[["method", "retrain"]].drop_duplicates().itertuples(index=False)
        ):
            result, wide = curve_phase_result(table, method, retrain, standard_errors, window)
            sparsity = curve_sparsity(table, method, retrain).reindex(wide.index).to_numpy()
            rows = _phase_rows(result, wide.index.to_numpy(), sparsity)
            phase_rows += [{"method": method, "retrain": retrain, "seed": None, **r} for r in rows]
    phases = pd.DataFrame(phase_rows, columns=list(PHASE_COLUMNS))
    phases["seed"] = phases["seed"].astype("Int64")
    table["phase"] = table["phase"].astype(object)
    # the phase beside the metrics it was read from, bookkeeping columns last
    first = [*CURVE, "level", *[c for c in _METRICS if c in table.columns], "phase"]
    return table[first + [c for c in table.columns if c not in first]], phases


def curve_phases(phases: pd.DataFrame, method: str, retrain: str) -> pd.DataFrame:
    """The phase rows to show for (method, retrain): the seed-mean curve's, else the one seed's."""
    rows = phases[(phases["method"] == method) & (phases["retrain"] == retrain)]
    mean = rows[rows["seed"].isna()]
    if not mean.empty:
        return mean
    seeds = rows["seed"].dropna().unique()
    return rows[rows["seed"] == seeds[0]] if seeds.size else rows


def boundaries(phases: pd.DataFrame) -> dict[str, Any]:
    """Phase boundaries as plain JSON: ``{"magnitude/rewind/seed0": {"light": [s0, s1], ...}}``."""
    out: dict[str, Any] = {}
    for (method, retrain, seed), rows in phases.groupby(
        ["method", "retrain", "seed"], dropna=False, sort=False
    ):
        name = f"{method}/{retrain}/" + ("mean" if pd.isna(seed) else f"seed{int(seed)}")
        out[name] = {
            "double_descent": bool(rows["double_descent"].iloc[0]),
            **{
                r.phase: [round(r.start_sparsity, 6), round(r.end_sparsity, 6)]
                for r in rows.itertuples()
            },
        }
    return out


def lottery_table(table: pd.DataFrame, phases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rewind (lottery ticket) vs reinit test accuracy at every level, seed-averaged.

    One row per (method, level) that a rewind or a reinit chain reached, with the columns of
    :data:`LOTTERY_COLUMNS` (and, with ``phases``, ``rewind_phase`` / ``reinit_phase``):
    ``sparsity`` is the rewind chain's measured sparsity (reinit retrains the rewind chain's
    masks, so the two are equal; the reinit one's where only reinit's records are given),
    ``remaining_pct`` = 100 (1 - sparsity),
    ``<mode>_test_acc`` the seed-mean test accuracy, ``reinit_minus_rewind`` their difference,
    ``n_seeds`` how many seeds the means average.

    The schema never depends on which modes ran: with only one of the two modes, its columns
    hold its curve and the other mode's accuracy, phase ("") and the difference are empty
    (null); with neither (``sdd.modes: [finetune]``) the table has no rows.
    """
    present = [m for m in LOTTERY_MODES if m in set(table["retrain"])]
    columns = [
        *LOTTERY_COLUMNS,
        *([f"{m}_phase" for m in LOTTERY_MODES] if phases is not None else []),
    ]
    if not present:
        empty = pd.DataFrame({c: pd.Series(dtype=_LOTTERY_DTYPES.get(c, object)) for c in columns})
        return empty
    means = mean_curves(table[table["retrain"].isin(present)])
    per_mode = {
        mode: means[means["retrain"] == mode].set_index(["method", "level"]) for mode in present
    }
    index = per_mode[present[0]].index
    for mode in present[1:]:
        index = index.union(per_mode[mode].index)
    out = pd.DataFrame(index=index.sort_values())
    sparsity = pd.Series(np.nan, index=out.index)
    n_seeds = pd.Series(0, index=out.index)
    for mode in present:  # rewind first: its sparsity where it ran
        rows = per_mode[mode].reindex(out.index)
        sparsity = sparsity.fillna(rows["sparsity"])
        n_seeds = n_seeds.where(n_seeds > 0, rows["n_seeds"].fillna(0))
    out["sparsity"] = sparsity
    out["remaining_pct"] = 100.0 * (1.0 - out["sparsity"])
    for mode in LOTTERY_MODES:
        acc = per_mode[mode]["test_acc"].reindex(out.index) if mode in per_mode else np.nan
        out[f"{mode}_test_acc"] = acc
    out["reinit_minus_rewind"] = out["reinit_test_acc"] - out["rewind_test_acc"]
    out["n_seeds"] = n_seeds.astype(int)
    out = out.reset_index()
    if phases is not None:
        for mode in LOTTERY_MODES:
            out[f"{mode}_phase"] = [
                _phase_at(curve_phases(phases, m, mode), lvl) if mode in per_mode else ""
                for m, lvl in zip(out["method"], out["level"], strict=True)
            ]
    return out.astype(_LOTTERY_DTYPES)[columns].reset_index(drop=True)


def _phase_at(rows: pd.DataFrame, level: int) -> str:
    hit = rows[(rows["first_level"] <= level) & (rows["last_level"] >= level)]
    return str(hit["phase"].iloc[0]) if not hit.empty else ""
