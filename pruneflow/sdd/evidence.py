"""What a sweep measured of the double descent: the four points of a curve and their intervals.

He et al. (ICML'22) claim that as sparsity grows the test accuracy
falls (the critical phase: the sparser net still fits the noisy labels), rises again (the sweet
phase) and finally collapses. On one (method, retrain) curve this module names four levels,
chosen on the seed-mean curve by the phase rule (:mod:`pruneflow.sdd.phases`):

* ``dense``: level 0;
* ``valley``: the bottom of the critical phase;
* ``peak``: the top of the sweet phase;
* ``sparsest``: the last level (the collapse).

When the rule finds no double descent, ``valley`` and ``peak`` are the ends of the curve's
largest rise after the dense level (:func:`pruneflow.sdd.phases.largest_rise`), so the
intervals still say how far from the claim the curve is. Each level's accuracy is a mean with
its 95% interval (:func:`pruneflow.stats.mean_interval`, seed spread and the test sample's
binomial error).

The three changes, the dip ``dense - valley``, the rise ``peak - valley`` and the collapse
``peak - sparsest``, are paired differences over the seeds
(:func:`pruneflow.stats.paired_difference`), **cross-fitted**: each seed is read at the
valley and the peak that the other seeds' mean curve puts there. Read at points picked on its
own values, a seed's noise would be chosen along with the curve (the lowest of noisy values
sits below the true bottom), and the changes would come out larger than they are; held out,
they are not. With one seed nothing can be held out: the points are picked on the values they
are read from.

The claim holds (:func:`verdict`) when each change is at least :data:`MIN_CHANGE` (3 points)
on average and its 95% interval excludes zero (He et al.'s phases, measured beyond the data's
uncertainty); it fails when one interval lies wholly below 3 points. With one seed the whole
interval must clear 3 points, the margin standing in for the cross-fitting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pruneflow.sdd.phases import largest_rise
from pruneflow.sdd.sweep import curve_phase_result, curve_sparsity, test_acc_by_seed, test_size
from pruneflow.stats import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Estimate,
    combine,
    mean_interval,
    paired_difference,
    verdict,
)

MIN_CHANGE = 0.03  # the dip, the rise and the collapse: each at least 3 points of accuracy
POINTS = ("dense", "valley", "peak", "sparsest")
CHANGES = ("dip", "rise", "collapse")


@dataclass(frozen=True)
class Evidence:
    """One curve's four points and three changes (fractions of accuracy)."""

    method: str
    retrain: str
    n_seeds: int
    test_size: int
    double_descent: bool  # the phase rule found the four phases on the seed-mean curve
    levels: dict[str, int]  # POINTS -> level
    sparsity: dict[str, float]  # POINTS -> measured sparsity
    accuracy: dict[str, Estimate]  # POINTS -> test accuracy, mean and 95% interval
    noise_fit: dict[str, float]  # POINTS -> seed-mean train accuracy on the noisy labels
    changes: dict[str, Estimate]  # CHANGES -> cross-fitted paired difference, 95% interval

    @property
    def verdict(self) -> str:
        return combine([change_verdict(self.changes[c], self.n_seeds) for c in CHANGES])


def change_verdict(change: Estimate, n_seeds: int) -> str:
    """One change of the claim: at least :data:`MIN_CHANGE` on average and above zero with its
    interval (cross-fitted, two or more seeds), or above :data:`MIN_CHANGE` with its whole
    interval (one seed); not reproduced when the interval lies wholly below the margin."""
    if n_seeds < 2:
        return verdict(change, MIN_CHANGE)
    if change.high < MIN_CHANGE:
        return NOT_REPRODUCED
    return REPRODUCED if change.mean >= MIN_CHANGE and change.low > 0.0 else INCONCLUSIVE


def _turning_points(
    table: pd.DataFrame, method: str, retrain: str, standard_errors: float, window: int
) -> tuple[bool, pd.DataFrame, int, int]:
    """(double descent found, the level x seed accuracies, the valley's and the peak's
    positions) on the seed-mean curve of ``table``'s (method, retrain) runs."""
    result, wide = curve_phase_result(table, method, retrain, standard_errors, window)
    if result.double_descent:
        return True, wide, int(result.valley), int(result.peak)  # type: ignore[arg-type]
    valley, peak = largest_rise(wide.mean(axis=1).to_numpy(), start=1)
    return False, wide, valley, peak


def _held_out(
    table: pd.DataFrame, method: str, retrain: str, standard_errors: float, window: int
) -> dict[str, np.ndarray]:
    """Each seed's accuracy at the four points the other seeds' mean curve picks
    (POINTS -> one value per seed, in the seeds' order)."""
    wide = test_acc_by_seed(table, method, retrain)
    levels = wide.index.to_numpy()
    out: dict[str, list[float]] = {k: [] for k in POINTS}
    for seed in wide.columns:
        _, _, valley, peak = _turning_points(
            table[table["seed"] != seed], method, retrain, standard_errors, window
        )
        mine = wide[seed]
        for k, i in zip(POINTS, (0, valley, peak, len(levels) - 1), strict=True):
            out[k].append(float(mine.loc[levels[i]]))
    return {k: np.asarray(v) for k, v in out.items()}


def descent_evidence(
    table: pd.DataFrame,
    method: str,
    retrain: str,
    standard_errors: float = 1.0,
    window: int = 1,
) -> Evidence:
    """The evidence of one (method, retrain) curve of a sweep table (module docstring)."""
    found, wide, valley, peak = _turning_points(table, method, retrain, standard_errors, window)
    levels_index = wide.index.to_numpy()
    positions = {"dense": 0, "valley": valley, "peak": peak, "sparsest": len(levels_index) - 1}
    levels = {k: int(levels_index[i]) for k, i in positions.items()}
    size = test_size(table)
    by_seed = {k: wide.loc[lvl].to_numpy() for k, lvl in levels.items()}
    held = (
        _held_out(table, method, retrain, standard_errors, window) if wide.shape[1] > 1 else by_seed
    )
    sparsity = curve_sparsity(table, method, retrain)
    rows = table[(table["method"] == method) & (table["retrain"] == retrain)]
    fit = rows.groupby("level")["train_acc_noisy"].mean()
    return Evidence(
        method=method,
        retrain=retrain,
        n_seeds=int(wide.shape[1]),
        test_size=size,
        double_descent=found,
        levels=levels,
        sparsity={k: float(sparsity.loc[lvl]) for k, lvl in levels.items()},
        accuracy={k: mean_interval(v, size) for k, v in by_seed.items()},
        noise_fit={k: float(fit.loc[lvl]) for k, lvl in levels.items()},
        changes={
            "dip": paired_difference(held["dense"], held["valley"], size),
            "rise": paired_difference(held["peak"], held["valley"], size),
            "collapse": paired_difference(held["peak"], held["sparsest"], size),
        },
    )
