"""Checkpoint files of the sweep: named groups of tensors in one safetensors file.

A level file holds ``weight/<state key>`` (the retrained model's full state dict) and
``mask/<layer>`` (bool, True = kept); the dense file of a seed holds ``weight/`` (after dense
training), ``init/`` (epoch 0) and ``rewind/`` (after ``sdd.rewind_epoch`` epochs). The file's
metadata records the architecture (``arch``: model name, classes, input shape) and what made it
(``info``), so the next level rebuilds the model from the file alone and refuses one made for
another model or chain. The per-level metrics go to a JSON sidecar written after it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from pruneflow.errors import PruneflowError
from pruneflow.io import load_tensors, save_tensors

Groups = dict[str, dict[str, torch.Tensor]]


def save_state(
    path: str | Path,
    groups: Mapping[str, Mapping[str, torch.Tensor]],
    arch: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``groups`` (``{"weight": state_dict, "mask": masks, ...}``) atomically."""
    flat: dict[str, torch.Tensor] = {}
    for group, tensors in groups.items():
        if "/" in group:
            raise PruneflowError(f"tensor group names may not contain '/': {group!r}")
        for key, tensor in tensors.items():
            flat[f"{group}/{key}"] = tensor
    meta = {"arch": json.dumps(dict(arch), sort_keys=True), "info": json.dumps(dict(info or {}))}
    return save_tensors(path, flat, metadata=meta)


def read_meta(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arch, info) from a state file's metadata."""
    path = Path(path)
    if not path.is_file():
        raise PruneflowError(f"missing sweep checkpoint {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        return json.loads(meta["arch"]), json.loads(meta.get("info", "{}"))
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise PruneflowError(f"{path} is not a pruneflow sweep checkpoint: {exc}") from exc


def load_state(path: str | Path) -> tuple[Groups, dict[str, Any], dict[str, Any]]:
    """(groups, arch, info) of a file written by :func:`save_state`."""
    arch, info = read_meta(path)
    groups: Groups = {}
    for key, tensor in load_tensors(path).items():
        group, sep, name = key.partition("/")
        if not sep:
            raise PruneflowError(f"{path}: tensor '{key}' belongs to no group")
        groups.setdefault(group, {})[name] = tensor
    return groups, arch, info


def require(groups: Groups, path: str | Path, *names: str) -> None:
    """Fail clearly when a state file lacks one of the groups a step needs."""
    missing = [n for n in names if n not in groups]
    if missing:
        raise PruneflowError(f"{path} has no {', '.join(missing)} tensors (groups: {list(groups)})")
