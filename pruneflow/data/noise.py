"""Label noise on the training split, fixed by a seed.

``symmetric``: a flipped label is drawn uniformly from the other K - 1 classes.
``asymmetric`` (pair flip): class k becomes (k + 1) mod K.
Exactly ``round(rate * n)`` labels are flipped, and never to their own class, so the realised
noise rate is the asked one (up to rounding), not a binomial draw around it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pruneflow.errors import PruneflowError

NoiseKind = Literal["symmetric", "asymmetric"]


def make_noisy_labels(
    labels: np.ndarray, num_classes: int, rate: float, kind: NoiseKind, seed: int
) -> np.ndarray:
    """A copy of ``labels`` with exactly ``round(rate * len(labels))`` of them flipped."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise PruneflowError(
            f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}"
        )
    if num_classes < 2:
        raise PruneflowError(f"label noise needs at least 2 classes, got {num_classes}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise PruneflowError(
            f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    if not 0.0 <= rate < 1.0:
        raise PruneflowError(f"noise rate must be in [0, 1), got {rate}")
    if kind not in ("symmetric", "asymmetric"):
        raise PruneflowError(f"noise kind must be 'symmetric' or 'asymmetric', got '{kind}'")
    rng = np.random.default_rng(seed)
    noisy = labels.astype(np.int64, copy=True)
    n_flip = int(round(rate * labels.size))
    flip = rng.choice(labels.size, size=n_flip, replace=False)
    if kind == "symmetric":
        # an offset in 1..K-1 is uniform over the other classes and never lands on the own class
        offset = rng.integers(1, num_classes, size=n_flip)
    else:
        offset = np.ones(n_flip, dtype=np.int64)
    noisy[flip] = (noisy[flip] + offset) % num_classes
    return noisy
