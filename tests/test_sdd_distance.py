"""Sparse double descent: the L2 learning distance on hand-made tensors."""

import math

import pytest
import torch

from pruneflow.errors import PruneflowError
from pruneflow.sdd.distance import learning_distance


def _state(a, b, bias=0.0):
    return {
        "fc1.weight": torch.tensor(a, dtype=torch.float32),
        "fc1.bias": torch.tensor([bias]),
        "fc2.weight": torch.tensor(b, dtype=torch.float32),
    }


def test_distance_is_the_l2_norm_over_all_prunable_weights():
    start = _state([[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0]])
    learned = _state([[3.0, 0.0], [0.0, 0.0]], [[1.0, 5.0]], bias=100.0)  # biases do not count
    assert learning_distance(start, learned, None, ["fc1", "fc2"]) == pytest.approx(5.0)


def test_only_kept_entries_count():
    start = _state([[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0]])
    learned = _state([[1.0, 2.0], [2.0, 0.0]], [[0.0, 4.0]])
    masks = {
        "fc1": torch.tensor([[True, False], [True, True]]),
        "fc2": torch.tensor([[False, True]]),
    }
    # kept differences: 1, 2, 0 (fc1) and 4 (fc2)
    assert learning_distance(start, learned, masks, ["fc1", "fc2"]) == pytest.approx(
        math.sqrt(1 + 4 + 16)
    )
    assert learning_distance(start, learned, masks, ["fc2"]) == pytest.approx(4.0)


def test_equal_weights_have_zero_distance_and_shapes_are_checked():
    s = _state([[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0]])
    assert learning_distance(s, s, None, ["fc1", "fc2"]) == 0.0
    with pytest.raises(PruneflowError, match="fc3.weight"):
        learning_distance(s, s, None, ["fc3"])
    with pytest.raises(PruneflowError, match="mask of 'fc2'"):
        learning_distance(s, s, {"fc2": torch.ones(2, 2, dtype=torch.bool)}, ["fc2"])
