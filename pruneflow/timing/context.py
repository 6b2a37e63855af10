"""What a layer's level does to the rest of the forward pass: the table's context effects.

SPDY's DP adds one entry per layer and a fixed remainder, so each entry must be the
*difference the layer's level makes to the whole forward pass*, not only the layer's own time.
A layer that streams a lot of memory (dense, or a CSR layer at 40-60% sparsity, whose values
and indices outweigh the dense weights) evicts what runs after it: measured in alternating
in-situ sweeps on mlp1024 (batch 64, one thread), a 95%-sparse layer ran 1.4-1.6x slower after
a dense neighbour than after a 95%-sparse one, and the ops outside the profiled layers (the
skipped 1024 -> 10 output layer, flatten, dispatch) took 0.15 ms after 95%-sparse layers and
0.31-0.40 ms after dense or 40-60%-sparse ones.

The profiler's sweeps give every layer a random level, each layer its own permutation of the
levels per round (:func:`pruneflow.timing.profiler._sweep_plan`), so over the sweeps every
layer's level varies independently of the others'. Then the main effect of layer ``i`` at level
``l`` on what follows it is the mean, over the sweeps with ``i`` at ``l``, of

    (time outside the profiled layers) + (next layer's time - its own table entry)

minus the same mean over all sweeps (the analysis-of-variance main effect of a balanced
design). The next layer's residual against its own entry, rather than its raw time, keeps its
own level's cost out of the sum; centring removes the sweeps' common drift. With the effect
added to its entries, ``remainder + sum of entries`` predicts a profile whose neighbours sit at
other levels than the ones each entry was timed beside, which one-level-per-sweep tables could
not (they never saw a dense or a heavy neighbour beside a sparse layer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SweepRecord", "context_effects"]


@dataclass(frozen=True)
class SweepRecord:
    """One sweep: each profiled layer's level, its time there (on the backend its table entry
    uses; None where it did not run on that backend in this sweep) and the time outside the
    profiled layers."""

    levels: Mapping[str, int]
    layer_ms: Mapping[str, float | None]
    outside_ms: float


def context_effects(
    records: Sequence[SweepRecord],
    entries: Mapping[str, Sequence[float]],
    order: Sequence[str],
) -> dict[str, np.ndarray]:
    """Per layer (in forward ``order``), the effect of each level on what follows it, in ms.

    ``entries``: each layer's table entry per level (before the effect). What follows layer
    ``i``: the outside time and the next layer in ``order`` (the first follows the last: a
    served model runs forward pass after forward pass). A level no sweep visited, or a layer
    with no record, gets 0.
    """
    nlev = len(next(iter(entries.values()))) if entries else 0
    effects = {n: np.zeros(nlev) for n in order}
    if not records or not order:
        return effects

    def residual(rec: SweepRecord, name: str) -> float:
        # a layer not timed on its table backend in a sweep: no evidence, the mean residual
        t = rec.layer_ms.get(name)
        return 0.0 if t is None else t - entries[name][rec.levels[name]]

    for k, name in enumerate(order):
        after = order[(k + 1) % len(order)] if len(order) > 1 else None
        z = np.array(
            [r.outside_ms + (residual(r, after) if after is not None else 0.0) for r in records]
        )
        level = np.array([r.levels[name] for r in records])
        mean = float(z.mean())
        for li in range(nlev):
            at = level == li
            if at.any():
                effects[name][li] = float(z[at].mean()) - mean
    return effects
