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
intervals still say how far from the claim the curve is. Every seed is then read at those
levels: each level's accuracy as a mean with its 95% interval
(:func:`pruneflow.stats.mean_interval`, seed spread and the test sample's binomial error) and
three paired differences (:func:`pruneflow.stats.paired_difference`, paired by seed):
the dip ``dense - valley``, the rise ``peak - valley`` and the collapse ``peak - sparsest``.

The claim holds (:func:`verdict`) when each of the three is above :data:`MIN_CHANGE` (3 points)
with its whole 95% interval; it fails when one interval lies wholly below. The levels are
picked on the same data the intervals come from, which favours the claim a little; the
3-point margin is there to outweigh that.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pruneflow.sdd.phases import largest_rise
from pruneflow.sdd.sweep import curve_phase_result, curve_sparsity, test_size
from pruneflow.stats import Estimate, combine, mean_interval, paired_difference, verdict

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
    changes: dict[str, Estimate]  # CHANGES -> paired difference and its 95% interval

    @property
    def verdict(self) -> str:
        return combine([verdict(self.changes[c], MIN_CHANGE) for c in CHANGES])


def descent_evidence(
    table: pd.DataFrame,
    method: str,
    retrain: str,
    standard_errors: float = 1.0,
    window: int = 1,
) -> Evidence:
    """The evidence of one (method, retrain) curve of a sweep table (module docstring)."""
    result, wide = curve_phase_result(table, method, retrain, standard_errors, window)
    levels_index = wide.index.to_numpy()
    if result.double_descent:
        valley, peak = int(result.valley), int(result.peak)  # type: ignore[arg-type]
    else:
        valley, peak = largest_rise(wide.mean(axis=1).to_numpy(), start=1)
    positions = {"dense": 0, "valley": valley, "peak": peak, "sparsest": len(levels_index) - 1}
    levels = {k: int(levels_index[i]) for k, i in positions.items()}
    size = test_size(table)
    by_seed = {k: wide.loc[lvl].to_numpy() for k, lvl in levels.items()}
    sparsity = curve_sparsity(table, method, retrain)
    rows = table[(table["method"] == method) & (table["retrain"] == retrain)]
    fit = rows.groupby("level")["train_acc_noisy"].mean()
    return Evidence(
        method=method,
        retrain=retrain,
        n_seeds=int(wide.shape[1]),
        test_size=size,
        double_descent=bool(result.double_descent),
        levels=levels,
        sparsity={k: float(sparsity.loc[lvl]) for k, lvl in levels.items()},
        accuracy={k: mean_interval(v, size) for k, v in by_seed.items()},
        noise_fit={k: float(fit.loc[lvl]) for k, lvl in levels.items()},
        changes={
            "dip": paired_difference(by_seed["dense"], by_seed["valley"], size),
            "rise": paired_difference(by_seed["peak"], by_seed["valley"], size),
            "collapse": paired_difference(by_seed["peak"], by_seed["sparsest"], size),
        },
    )
