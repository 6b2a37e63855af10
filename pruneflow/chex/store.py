"""Saving and loading CHEX models: the masked full-size model, its masks, the extracted model.

The masked model is stored at its dense shapes (``pruneflow.checkpoint``'s format: safetensors +
JSON sidecar), the masks as one bool vector per channel group. An extracted model is stored as
its state dict plus the channel count of every group: rebuilding the dense architecture and
removing all but the first ``count`` channels of each group gives a model of exactly the right
shapes to load it into, so no pickled module is ever needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneflow.checkpoint import load_weights, read_arch, save_checkpoint, sidecar
from pruneflow.chex.arch import build_model
from pruneflow.chex.extract import extract, keep_first
from pruneflow.chex.groups import ChannelGroup, find_groups
from pruneflow.errors import PruneflowError
from pruneflow.io import load_tensors, save_tensors


def save_masks(path: str | Path, active: dict[str, torch.Tensor]) -> None:
    save_tensors(path, {name: mask.to(torch.uint8) for name, mask in active.items()})


def load_masks(path: str | Path, groups: list[ChannelGroup]) -> dict[str, torch.Tensor]:
    """Masks by group, checked against the model's groups (names and sizes)."""
    stored = load_tensors(path)
    expected = {g.name: g.size for g in groups}
    if set(stored) != set(expected):
        raise PruneflowError(
            f"{path}: masks for groups {sorted(stored)} do not fit the model's channel groups "
            f"{sorted(expected)}"
        )
    masks = {}
    for name, size in expected.items():
        mask = stored[name].to(torch.bool)
        if mask.shape != (size,) or not mask.any():
            raise PruneflowError(f"{path}: mask '{name}' must have {size} entries, one kept")
        masks[name] = mask
    return masks


def load_masked(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The masked full-size model and its sidecar."""
    path = Path(path)
    arch, meta = read_arch(path)
    model = build_model(arch["name"], arch["num_classes"], tuple(arch["in_shape"]), 0)
    load_weights(path, model, f"model {arch['name']}")
    return model, meta


def save_extracted(
    path: str | Path,
    model: nn.Module,
    arch: dict[str, Any],
    channels: dict[str, int],
    info: dict[str, Any],
) -> None:
    save_checkpoint(path, model, arch, {"channels": channels, **info})


def load_extracted(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an extracted model from its state dict and per-group channel counts."""
    path = Path(path)
    arch, meta = read_arch(path)
    in_shape = tuple(arch["in_shape"])
    dense = build_model(arch["name"], arch["num_classes"], in_shape, 0)
    example = torch.zeros(2, *in_shape)
    groups = find_groups(dense, example)
    channels = meta.get("channels") or {}
    if set(channels) != {g.name for g in groups}:
        raise PruneflowError(f"{sidecar(path)}: 'channels' does not list the model's groups")
    model = extract(dense, groups, keep_first(groups, channels), example)
    load_weights(path, model, f"the extracted {arch['name']}")
    return model, meta
