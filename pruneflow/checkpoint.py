"""Model checkpoints: weights as safetensors plus a JSON sidecar saying how to rebuild them.

``<name>.safetensors`` holds the state dict; ``<name>.json`` holds ``arch`` (model name,
num_classes, in_shape), the params the model was trained with, its metrics and its seed. A
checkpoint is loaded by rebuilding the architecture from the sidecar and checking that every
tensor's name and shape match before any is copied in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.io import load_tensors, read_json, save_tensors, write_json
from pruneflow.models import build


def sidecar(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_checkpoint(
    path: str | Path, model: nn.Module, arch: dict[str, Any], info: dict[str, Any]
) -> None:
    """Write weights then sidecar, each atomically (the sidecar last: it marks completeness)."""
    save_tensors(path, model.state_dict(), metadata={"model": arch["name"]})
    write_json(sidecar(path), {"arch": arch, **info})


def read_arch(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sidecar's ``arch`` entry (checked) and the whole sidecar."""
    meta = read_json(sidecar(path))
    arch = meta.get("arch")
    if not isinstance(arch, dict) or not {"name", "num_classes", "in_shape"} <= arch.keys():
        raise PruneflowError(f"{sidecar(path)}: missing or malformed 'arch' entry")
    return arch, meta


def load_weights(path: str | Path, model: nn.Module, what: str) -> None:
    """Copy ``path``'s tensors into ``model`` after checking every name and shape (``what``
    names the model in the errors)."""
    state = load_tensors(path)
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    extra = sorted(state.keys() - expected.keys())
    if missing or extra:
        raise PruneflowError(
            f"{path} does not fit {what}: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise PruneflowError(
                f"{path}: tensor '{key}' has shape {tuple(tensor.shape)}, {what} expects "
                f"{tuple(expected[key].shape)}"
            )
    model.load_state_dict(state)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model recorded in the sidecar and load its weights (names and shapes checked)."""
    path = Path(path)
    arch, meta = read_arch(path)
    model = build(arch["name"], arch["num_classes"], tuple(arch["in_shape"]))
    load_weights(path, model, f"model {arch['name']}")
    return model, meta
