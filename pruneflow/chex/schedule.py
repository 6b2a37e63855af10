"""When CHEX prunes and regrows, and how much it regrows each time."""

from __future__ import annotations

import math

from pruneflow.errors import PruneflowError


def regrow_fraction(step: int, n_steps: int, delta0: float) -> float:
    """Cosine-decayed regrowing factor ``0.5 (1 + cos(pi t / (T_max / Delta_T))) delta0``.

    ``step`` is the prune/regrow step ``t`` (1 .. ``n_steps`` = ``T_max / Delta_T``): the factor
    falls from just under ``delta0`` to exactly 0 at the last step, so the architecture fixed at
    ``T_max`` is the pruned one and meets the budget.
    """
    if n_steps < 1 or not 0 <= step <= n_steps:
        raise ValueError(f"step {step} is not in 0..{n_steps}")
    return 0.5 * (1.0 + math.cos(math.pi * step / n_steps)) * delta0


def exploration_iterations(
    iters_per_epoch: int, delta_t: float, t_max: float, epochs: int
) -> tuple[int, int]:
    """``(Delta_T, T_max)`` in iterations from epochs, checked: ``Delta_T <= T_max <= total``."""
    if delta_t <= 0 or t_max <= 0:
        raise PruneflowError(f"chex.delta_t ({delta_t}) and chex.t_max ({t_max}) must be > 0")
    if delta_t > t_max:
        raise PruneflowError(
            f"chex.delta_t = {delta_t} epochs is larger than chex.t_max = {t_max} epochs: there "
            "would be no prune/regrow step; make delta_t <= t_max"
        )
    if t_max > epochs:
        raise PruneflowError(
            f"chex.t_max = {t_max} epochs is beyond the end of training ({epochs} epochs)"
        )
    every = max(1, round(delta_t * iters_per_epoch))
    until = max(1, round(t_max * iters_per_epoch))
    if every > until:
        raise PruneflowError(
            f"chex.delta_t ({delta_t} epochs = {every} iterations) is larger than chex.t_max "
            f"({t_max} epochs = {until} iterations)"
        )
    return every, until
