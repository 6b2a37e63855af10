import numpy as np
import pytest

from pruneflow.data import make_noisy_labels, make_splits
from pruneflow.errors import PruneflowError


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.45])
def test_exact_count_never_own_class_deterministic(kind, rate):
    labels = np.random.default_rng(1).integers(0, 10, size=1001)
    noisy = make_noisy_labels(labels, 10, rate, kind, seed=3)
    flipped = noisy != labels
    assert flipped.sum() == round(rate * labels.size)
    np.testing.assert_array_equal(noisy, make_noisy_labels(labels, 10, rate, kind, seed=3))
    if kind == "asymmetric":
        np.testing.assert_array_equal(noisy[flipped], (labels[flipped] + 1) % 10)
    assert labels.dtype == noisy.dtype or noisy.dtype == np.int64


def test_symmetric_noise_spreads_over_other_classes():
    labels = np.zeros(20_000, dtype=np.int64)
    noisy = make_noisy_labels(labels, 5, 0.5, "symmetric", seed=0)
    counts = np.bincount(noisy[noisy != 0], minlength=5)[1:]
    assert counts.sum() == 10_000
    assert np.all(np.abs(counts / counts.sum() - 0.25) < 0.02)


def test_different_seeds_differ_and_input_untouched():
    labels = np.arange(100) % 10
    before = labels.copy()
    a = make_noisy_labels(labels, 10, 0.3, "symmetric", seed=0)
    b = make_noisy_labels(labels, 10, 0.3, "symmetric", seed=1)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(labels, before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 1.5}, "noise rate"),
        ({"rate": -0.1}, "noise rate"),
        ({"kind": "sideways"}, "noise kind"),
        ({"num_classes": 1}, "at least 2 classes"),
        ({"labels": np.array([0, 12])}, r"\[0, 10\)"),
        ({"labels": np.array([0.5, 1.0])}, "integer"),
    ],
)
def test_noise_bad_input(kwargs, match):
    args = {"labels": np.arange(10), "num_classes": 10, "rate": 0.2, "kind": "symmetric", "seed": 0}
    args.update(kwargs)
    with pytest.raises(PruneflowError, match=match):
        make_noisy_labels(**args)


def test_splits_stratified_seeded_and_official_test_kept():
    targets = np.repeat(np.arange(10), 100)
    split = make_splits(targets, None, 0.1, 0.2, seed=0)
    assert (split == "test").sum() == 200 and (split == "val").sum() == 80
    for cls in range(10):
        assert (split[targets == cls] == "test").sum() == 20
    np.testing.assert_array_equal(split, make_splits(targets, None, 0.1, 0.2, seed=0))
    assert not np.array_equal(split, make_splits(targets, None, 0.1, 0.2, seed=1))
    official = np.r_[np.zeros(800, bool), np.ones(200, bool)]
    split = make_splits(targets, official, 0.1, 0.5, seed=0)
    np.testing.assert_array_equal(split == "test", official)
