"""SPDY's sparsity grid and the skipped-layer rule."""

from __future__ import annotations

import numpy as np
import pytest

from pruneflow.errors import PruneflowError
from pruneflow.sparsity import skipped_layers, sparsity_grid


def test_default_grid_matches_the_authors_levels() -> None:
    levels = sparsity_grid()
    assert len(levels) == 42
    assert levels[0] == 0.0
    assert [round(v, 4) for v in levels[1:4]] == [0.4, 0.4584, 0.5111]
    assert [round(v, 4) for v in levels[-2:]] == [0.9889, 0.99]
    assert levels[-1] == 0.99  # exactly, no drift
    density = 1 - np.asarray(levels[1:])
    ratios = density[1:] / density[:-1]
    assert np.allclose(ratios, ratios[0])  # geometric in density
    assert ratios[0] == pytest.approx(0.9027, abs=1e-4)
    assert all(a < b for a, b in zip(levels, levels[1:], strict=False))


def test_custom_grid() -> None:
    levels = sparsity_grid(0.5, 0.9, 2)
    assert levels == pytest.approx([0.0, 0.5, 1 - 0.5 * (0.2**0.5), 0.9])


@pytest.mark.parametrize(
    "args",
    [
        (0.0, 0.9, 10),
        (0.5, 1.0, 10),
        (0.9, 0.5, 10),
        (0.5, 0.5, 10),
        (0.4, 0.99, 0),
        (0.4, 0.99, 2.5),
        (0.4, 0.99, True),
        (float("nan"), 0.9, 3),
        (-0.1, 0.9, 3),
    ],
)
def test_invalid_grid_is_a_clear_error(args: tuple) -> None:
    with pytest.raises(PruneflowError, match="sparsity grid"):
        sparsity_grid(*args)


def test_skipped_layers_first_and_last_by_default() -> None:
    names = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "fc"]
    assert skipped_layers("resnet18_cifar", names) == ["conv1", "fc"]
    assert skipped_layers("resnet18_cifar", names, skip_first_last=False) == []


def test_mlp1024_keeps_only_its_output_layer_dense() -> None:
    assert skipped_layers("mlp1024", ["fc1", "fc2", "fc3", "fc4"]) == ["fc4"]


def test_skipped_layers_edge_cases() -> None:
    assert skipped_layers("smallcnn", ["only"]) == ["only"]
    with pytest.raises(PruneflowError, match="no prunable layers"):
        skipped_layers("smallcnn", [])
    with pytest.raises(PruneflowError, match="duplicate"):
        skipped_layers("smallcnn", ["a", "a"])
