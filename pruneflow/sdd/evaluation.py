"""What is measured at every sweep level (the same for the dense model, level 0).

Training images are scored twice: against the noisy labels they were trained on (how much of
the noise the net memorised) and against their true labels. ``noise_fit`` is the accuracy on the
flipped images alone w.r.t. their flipped labels: 1.0 means every noisy label is memorised,
about ``1/(K-1)`` of nothing. Test accuracy and loss use the clean test labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from pruneflow.data import ImageData
from pruneflow.train import evaluate


class Splits:
    """Index arrays and label vectors of one labels.parquet, computed once per step."""

    def __init__(self, frame: pd.DataFrame):
        split = frame["split"].to_numpy()
        self.train = np.flatnonzero(split == "train")
        self.test = np.flatnonzero(split == "test")
        self.noisy = frame["label"].to_numpy()
        self.true = frame["true_label"].to_numpy()
        is_noisy = frame["is_noisy"].to_numpy()
        self.flipped = self.train[is_noisy[self.train]]


def level_metrics(model: nn.Module, data: ImageData, splits: Splits) -> dict[str, Any]:
    """train_acc_noisy, train_acc_true, noise_fit, train_loss, test_acc, test_loss, test_size."""
    train_loss, train_noisy = evaluate(model, data, splits.train, splits.noisy)
    _, train_true = evaluate(model, data, splits.train, splits.true)
    test_loss, test_acc = evaluate(model, data, splits.test, splits.true)
    noise_fit = (
        evaluate(model, data, splits.flipped, splits.noisy)[1] if splits.flipped.size else None
    )
    return {
        "train_acc_noisy": train_noisy,
        "train_acc_true": train_true,
        "noise_fit": noise_fit,
        "train_loss": train_loss,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "test_size": int(splits.test.size),  # the binomial error of test_acc needs it
    }
