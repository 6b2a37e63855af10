"""A pruned model as safetensors: its state dict exactly (zeros where pruned), so that
``model.load_state_dict(load_file(path))`` loads it into the user's own module, plus a masks
file (one bool tensor per pruned layer, stored as uint8) and the per-layer sparsity, the model
name and where it came from in the header metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.io import load_tensors, save_tensors
from pruneflow.models.weights import fit_state_dict


def layer_masks(model: nn.Module, layers: list[str]) -> dict[str, torch.Tensor]:
    """The nonzero pattern of each of ``layers``' weights (what pruning left)."""
    modules = dict(model.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        raise PruneflowError(f"export: the model has no layer {missing[0]}")
    return {n: modules[n].weight.detach() != 0 for n in layers}


def sparsity_of(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {n: float(1.0 - m.float().mean()) for n, m in masks.items()}


def save_pruned(
    weights_path: str | Path,
    masks_path: str | Path,
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    info: Mapping[str, Any],
) -> dict[str, float]:
    """Write the state dict and the masks; returns the per-layer sparsity recorded in both."""
    sparsity = sparsity_of(masks)
    metadata = {"sparsity": json.dumps(sparsity, sort_keys=True)}
    metadata |= {k: v if isinstance(v, str) else json.dumps(v) for k, v in info.items()}
    save_tensors(weights_path, model.state_dict(), metadata=metadata)
    save_tensors(masks_path, {n: m.to(torch.uint8) for n, m in masks.items()}, metadata=metadata)
    return sparsity


def read_metadata(path: str | Path) -> dict[str, Any]:
    """An exported file's header metadata, JSON values decoded."""
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load_pruned(model: nn.Module, weights_path: str | Path) -> dict[str, float]:
    """Load an exported model's weights into ``model`` (names and shapes checked); returns its
    per-layer sparsity."""
    fit_state_dict(model, load_tensors(weights_path), weights_path, type(model).__name__)
    return read_metadata(weights_path).get("sparsity", {})
