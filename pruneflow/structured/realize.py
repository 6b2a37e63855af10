"""A width profile as a physically smaller model, and its measured speedup.

The dense model is stitched at the profile (consumers refitted, dropped channels zeroed) and
CHEX's extraction (:func:`pruneflow.chex.extract.extract`, Torch-Pruning's dependency graph)
removes the dropped channels from every layer that holds them: an ordinary dense model with
fewer channels, which computes the stitched model's function exactly (eval mode) and runs
faster on any backend. The speedup is measured end to end with plain torch
(:func:`pruneflow.timing.measure.measure_speedups`: dense and thinned model alternating in
passes, the table's quantile of the pooled runs).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from pruneflow.chex.extract import extract
from pruneflow.chex.groups import ChannelGroup
from pruneflow.structured.database import StructuredDB
from pruneflow.timing.measure import measure_speedups, thread_scope

__all__ = ["measured_speedup", "realize"]


def realize(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    db: StructuredDB,
    levels: Sequence[int],
    example: torch.Tensor,
) -> nn.Module:
    """The physically thinned copy of ``model`` at ``levels`` (``model`` is unchanged)."""
    work = copy.deepcopy(model).eval()
    db.stitch(work, groups, levels)
    masks = db.masks({g.name: g.size for g in groups}, levels)
    return extract(work, list(groups), masks, example).eval()


def measured_speedup(
    dense: nn.Module,
    thin: nn.Module,
    x: torch.Tensor,
    threads: int,
    repeats: int,
    passes: int,
    quantile: float,
    min_block_seconds: float = 0.0,
) -> float:
    """End-to-end speedup of ``thin`` over ``dense`` on ``x`` (plain torch, ``threads``); each
    model's block in a pass runs at least ``min_block_seconds``."""
    dense, thin = dense.eval(), thin.eval()
    with thread_scope(threads), torch.no_grad():
        (speedup,) = measure_speedups(
            lambda: dense(x),
            [lambda: thin(x)],
            repeats=repeats,
            passes=passes,
            quantile=quantile,
            min_block_seconds=min_block_seconds,
        )
    return speedup
