"""The L2 learning distance of He et al. (section 5): how far retraining moved the weights.

``D = || w_start - w_learned ||_2`` where the vectors are the weights of the prunable layers
(Conv2d/Linear ``weight`` tensors; biases and BatchNorm parameters excluded) restricted to the
entries the level's masks keep, concatenated over layers. ``w_start`` is where this level's
training began (the pruned weights for ``finetune``, the masked rewind-point weights for
``rewind``, the masked fresh weights for ``reinit``, the initial weights for the dense model).
Pruned entries are zero in both, so including them would not change the value; restricting to
the kept ones makes the definition independent of that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from pruneflow.errors import PruneflowError


def learning_distance(
    start: Mapping[str, torch.Tensor],
    learned: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None,
    layers: list[str],
) -> float:
    """``sqrt(sum_l sum_{mask_l} (learned_l - start_l)^2)`` over ``layers``' weights.

    ``start`` and ``learned`` are state dicts (``"<layer>.weight"`` keys); ``masks`` maps layer
    names to bool tensors (True = kept); ``None`` means nothing is pruned (the dense model).
    """
    total = 0.0
    for layer in layers:
        key = f"{layer}.weight"
        if key not in start or key not in learned:
            raise PruneflowError(f"learning distance: no weight '{key}' in both state dicts")
        a, b = start[key].detach().double(), learned[key].detach().double()
        if a.shape != b.shape:
            raise PruneflowError(
                f"learning distance: '{key}' has shapes {tuple(a.shape)} and {tuple(b.shape)}"
            )
        diff = b - a
        if masks is not None:
            mask = masks[layer]
            if mask.shape != diff.shape:
                raise PruneflowError(
                    f"learning distance: mask of '{layer}' has shape {tuple(mask.shape)}, "
                    f"weight {tuple(diff.shape)}"
                )
            diff = diff[mask.bool()]
        total += float(diff.pow(2).sum())
    return math.sqrt(total)
