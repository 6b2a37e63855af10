"""Scoring a sparsity profile: stitch it from the reconstruction database, measure the loss.

One :class:`CalibrationLoss` lives for a whole search: the calibration batches are loaded once,
and each call stitches only the layers whose level changed since the previous candidate
(:class:`pruneflow.recon.Stitcher`), then runs one forward pass over the batches.

BatchNorm: ``"eval"`` (default) uses the dense model's running statistics, as the SPDY code
does; ``"train"`` normalises with each calibration batch's own statistics, the implicit BN
re-calibration of OBC's variant. In train mode the running statistics are not updated (BN
momentum is set to 0 while scoring), so a profile's score never depends on which profiles were
scored before it: the search's memo stays exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import nn

from pruneflow import memory_format
from pruneflow.errors import PruneflowError
from pruneflow.recon import ReconstructionDB
from pruneflow.runtime import current_device

BnMode = Literal["eval", "train"]


@contextlib.contextmanager
def bn_batch_statistics(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm that reads batch statistics but leaves the running ones alone."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum, m.training) for m in norms]
    try:
        for m in norms:
            m.momentum = 0.0
            m.train()
        yield
    finally:
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)


class CalibrationLoss:
    """``loss(levels)`` = mean batch cross-entropy of the model stitched at ``levels``."""

    def __init__(
        self,
        model: nn.Module,
        db: ReconstructionDB,
        layers: Sequence[str],
        batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
        bn: BnMode = "eval",
    ):
        if bn not in ("eval", "train"):
            raise PruneflowError(f"BatchNorm scoring mode must be 'eval' or 'train', got '{bn}'")
        if not batches:
            raise PruneflowError("scoring needs at least one calibration batch")
        # the search owns this model: it stays on the step's device (runtime.device), where the
        # calibration batches are loaded once; stitching copies database weights onto it
        device = current_device()
        self.model = model.eval().to(device)
        self.layers = list(layers)
        self.batches = [(x.to(device), y.to(device)) for x, y in batches]
        # a search scores hundreds of candidates: channels-last convolutions run ~1.4x faster
        # here (pruneflow.memory_format); the layout is converted before the stitcher records
        # the weights it owns, so every later stitch copies into channels-last storage
        if memory_format.convert(self.model):
            self.batches = [(memory_format.as_channels_last(x), y) for x, y in self.batches]
        self.bn = bn
        self.stitcher = db.stitcher(model)
        self.swapped_layers = 0  # how many layer copies all calls made (the stitching cost)

    def stitch(self, levels: Sequence[int]) -> nn.Module:
        if len(levels) != len(self.layers):
            raise PruneflowError(f"profile has {len(levels)} levels for {len(self.layers)} layers")
        self.swapped_layers += len(self.stitcher.apply(dict(zip(self.layers, levels, strict=True))))
        return self.model

    @torch.no_grad()
    def __call__(self, levels: Sequence[int]) -> float:
        model = self.stitch(levels)
        context = bn_batch_statistics(model) if self.bn == "train" else contextlib.nullcontext()
        with context:
            losses = [nn.functional.cross_entropy(model(x), y).item() for x, y in self.batches]
        return float(sum(losses) / len(losses))
