"""The iterative pruning schedule: level L keeps ``(1 - f)^L`` of the prunable weights.

Every round removes the fraction ``f`` (``sdd.prune_fraction``) of the weights still there, so
level ``L`` has sparsity ``1 - (1 - f)^L``. The sweep runs levels ``0..n`` where ``n`` is the
first level whose sparsity reaches ``final_sparsity``. The last level is *not* clipped to
``final_sparsity``: a level's sparsity depends on ``f`` and ``L`` alone, so raising
``final_sparsity`` later only appends levels and every cached level stays valid.

Masks remove exactly ``round(sparsity * n_weights)`` weights (pruneflow.sparsity.masks.select),
so the measured sparsity equals the scheduled one up to one weight.
"""

from __future__ import annotations

import math

from pruneflow.errors import PruneflowError

# float slack so that e.g. f = 0.5, final = 0.75 stops at exactly level 2, not level 3
_EPS = 1e-9


def _check(prune_fraction: float, final_sparsity: float | None = None) -> None:
    if not isinstance(prune_fraction, (int, float)) or not 0.0 < prune_fraction < 1.0:
        raise PruneflowError(f"sdd.prune_fraction must be in (0, 1), got {prune_fraction!r}")
    if final_sparsity is not None and (
        not isinstance(final_sparsity, (int, float)) or not 0.0 < final_sparsity < 1.0
    ):
        raise PruneflowError(f"sdd.final_sparsity must be in (0, 1), got {final_sparsity!r}")


def level_sparsity(prune_fraction: float, level: int) -> float:
    """Sparsity of level ``level`` (0 = dense): ``1 - (1 - prune_fraction) ** level``."""
    _check(prune_fraction)
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise PruneflowError(f"a sweep level is an integer >= 0, got {level!r}")
    return 1.0 - (1.0 - prune_fraction) ** level


def num_levels(prune_fraction: float, final_sparsity: float) -> int:
    """Pruned levels in the sweep: the smallest ``n`` with ``level_sparsity(n) >= final``."""
    _check(prune_fraction, final_sparsity)
    n = math.log(1.0 - final_sparsity) / math.log(1.0 - prune_fraction)
    return max(1, math.ceil(n - _EPS))


def schedule(prune_fraction: float, final_sparsity: float) -> list[float]:
    """Sparsities of levels ``0..n``: ``[0.0, f, 1 - (1 - f)^2, ...]``, the last >= final."""
    n = num_levels(prune_fraction, final_sparsity)
    return [level_sparsity(prune_fraction, level) for level in range(n + 1)]
