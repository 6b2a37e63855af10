"""What the SPDY steps share: the dense model, the layers SPDY prunes, the calibration set,
and how a pruned model's speedup is measured.

The calibration set is ``spdy.recon.calib_samples`` training images drawn once with
``spdy.recon.calib_seed`` (all of the train split when it is smaller). The reconstruction
database is fit on it and the sensitivity search scores candidates on it (with the true labels),
as in the paper: both only ever see the same few training images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneflow import layout
from pruneflow.checkpoint import load_checkpoint, sidecar
from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.models import prunable_layers
from pruneflow.sparsity.grid import skipped_layers
from pruneflow.steps.data import load_data, read_labels
from pruneflow.timing import measure_speedups, thread_scope
from pruneflow.train import evaluate

# keys every step that reads the calibration set must list
CALIB_KEYS = ("spdy.recon.calib_samples", "spdy.recon.calib_seed", "spdy.recon.batch_size")
# keys every step that measures a speedup must list
MEASURE_KEYS = tuple(f"spdy.gmp.measure_{k}" for k in ("repeats", "passes", "block_seconds"))


def spdy_layers(p: Params, model: nn.Module) -> list[str]:
    """The prunable layers SPDY chooses levels for (all but the skipped first/last)."""
    names = prunable_layers(model)
    g = p.spdy.grid
    skipped = set(skipped_layers(p.model.name, names, g.skip_first_last, g.include, g.exclude))
    return [n for n in names if n not in skipped]


def dense_model(p: Params) -> nn.Module:
    """The trained dense model of ``p.model.name``, in eval mode."""
    model, meta = load_checkpoint(layout.dense_checkpoint(p))
    arch = meta["arch"]["name"]
    if arch != p.model.name:
        raise PruneflowError(
            f"{layout.dense_checkpoint(p)} holds a {arch}, not the {p.model.name} asked for"
        )
    return model.eval()


def calibration_indices(p: Params, samples: int | None = None) -> np.ndarray:
    """Indices (into the data set) of the calibration images (sorted): the first
    ``spdy.recon.calib_samples`` of the train split in a seeded order, or the first ``samples``
    of them (a subset of the database's set, as SPDY's scoring uses)."""
    frame, _ = read_labels(p)
    train = np.flatnonzero(frame["split"].to_numpy() == "train")
    if train.size == 0:
        raise PruneflowError(f"{layout.labels_table(p)} has no training images to calibrate on")
    rng = np.random.default_rng(p.spdy.recon.calib_seed)
    count = (
        p.spdy.recon.calib_samples if samples is None else min(samples, p.spdy.recon.calib_samples)
    )
    return np.sort(rng.permutation(train)[:count])


def calibration_batches(
    p: Params, samples: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The calibration images (:func:`calibration_indices`) with their true labels, in batches
    of ``spdy.recon.batch_size``."""
    frame, _ = read_labels(p)
    data = load_data(p)
    idx = calibration_indices(p, samples)
    labels = torch.as_tensor(frame["true_label"].to_numpy()[idx], dtype=torch.long)
    images = data.images(idx)
    size = p.spdy.recon.batch_size
    return [(images[i : i + size], labels[i : i + size]) for i in range(0, len(idx), size)]


def test_accuracy(p: Params, model: nn.Module) -> float:
    """Accuracy on the test split's clean labels, BatchNorm in eval mode."""
    frame, _ = read_labels(p)
    idx = np.flatnonzero(frame["split"].to_numpy() == "test")
    return evaluate(model, load_data(p), idx, frame["true_label"].to_numpy())[1]


def inputs_of_dense(p: Params) -> list[Path]:
    ckpt = layout.dense_checkpoint(p)
    return [layout.labels_table(p), ckpt, sidecar(ckpt)]


def timing_batch(p: Params, meta: dict[str, Any]) -> torch.Tensor:
    """The first training images, as many as the timing table's batch: what a speedup is
    measured on."""
    frame, _ = read_labels(p)
    train = np.flatnonzero(frame["split"].to_numpy() == "train")
    return load_data(p).images(train[: int(meta["batch_size"])])


def measured_speedups(
    p: Params,
    meta: dict[str, Any],
    dense: Callable[[torch.Tensor], Any],
    pruned: Sequence[Callable[[torch.Tensor], Any]],
    x: torch.Tensor,
) -> list[float]:
    """End-to-end speedup of every ``pruned`` runtime over ``dense`` on ``x``, all of them
    timed in ``spdy.gmp.measure_passes`` passes (:func:`~pruneflow.timing.measure_speedups`)
    at the timing table's thread count and statistic (its quantile), so that a measured speedup
    compares with the one the table predicted."""
    g = p.spdy.gmp
    with thread_scope(int(meta["threads"])), torch.inference_mode():
        return measure_speedups(
            lambda: dense(x),
            [lambda rt=rt: rt(x) for rt in pruned],
            repeats=g.measure_repeats,
            passes=g.measure_passes,
            min_block_seconds=g.measure_block_seconds,
            quantile=float(meta.get("quantile", 0.5)),
        )
