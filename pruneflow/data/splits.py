"""Fixed, seeded, stratified train/val/test splits.

Data sets with an official test set keep it as ``test``; the rest (digits, mnist5k) get a
stratified test share. ``val`` is always carved, stratified, from what is not test. The split is
a pure function of (targets, official test mask, fractions, seed), and is recorded per image in
``labels.parquet``.
"""

from __future__ import annotations

import numpy as np

from pruneflow.errors import PruneflowError

SPLITS = ("train", "val", "test")


def _stratified_take(indices: np.ndarray, targets: np.ndarray, fraction: float, rng) -> np.ndarray:
    taken = []
    for cls in np.unique(targets[indices]):
        members = indices[targets[indices] == cls]
        k = int(round(fraction * members.size))
        taken.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(taken)) if taken else np.empty(0, dtype=np.int64)


def make_splits(
    targets: np.ndarray,
    official_test: np.ndarray | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> np.ndarray:
    """An array of 'train' / 'val' / 'test', one per image."""
    targets = np.asarray(targets)
    n = targets.size
    if n == 0:
        raise PruneflowError("cannot split an empty data set")
    rng = np.random.default_rng(seed)
    split = np.full(n, "train", dtype=object)
    everything = np.arange(n)
    if official_test is not None:
        test = everything[np.asarray(official_test, dtype=bool)]
    else:
        test = _stratified_take(everything, targets, test_fraction, rng)
    split[test] = "test"
    rest = everything[split == "train"]
    split[_stratified_take(rest, targets, val_fraction, rng)] = "val"
    if not (split == "train").any():
        raise PruneflowError(f"the split left no training images (n={n})")
    return split
