"""A user's trained checkpoint (``model.weights``): read without unpickling, fitted to the model.

Two formats: safetensors (``.safetensors``), or a PyTorch state dict saved with ``torch.save``
and read with ``torch.load(weights_only=True)``, which restores tensors and plain containers
only. A file that needs arbitrary unpickling (a whole pickled ``nn.Module``, custom classes)
is refused: unpickling runs code from the file. A training checkpoint that wraps the state
dict (``{"state_dict": ...}`` or ``{"model": ...}``, as many training scripts save) is
unwrapped.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.io import load_tensors

_WRAPPERS = ("state_dict", "model", "model_state_dict")


def _refuse_pickle(path: Path, exc: Exception) -> PruneflowError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return PruneflowError(
        f"{path} needs arbitrary unpickling, which pruneflow never does "
        f"(torch.load(weights_only=True): {first}); convert it once, where you trust the file: "
        f"torch.save(torch.load('{path}', weights_only=False).state_dict(), 'weights.pt') "
        "or safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')"
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or of a torch state dict (never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise PruneflowError(f"model.weights: no file {path}")
    if path.suffix == ".safetensors":
        return load_tensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refuse_pickle(path, exc) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        text = str(exc)
        if "weights_only" in text or "Weights only" in text:
            raise _refuse_pickle(path, exc) from None
        raise PruneflowError(
            f"{path}: not a safetensors file nor a torch state dict ({type(exc).__name__}: "
            f"{text.splitlines()[0] if text else ''})"
        ) from None
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        got = type(obj).__name__
        raise PruneflowError(f"{path}: expected a state dict (name -> tensor), got {got}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise PruneflowError(f"{path}: entry '{bad[0]}' of the state dict is not a tensor")
    return {str(k): v for k, v in obj.items()}


def fit_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str | Path, what: str
) -> None:
    """Load ``state`` into ``model`` after checking names and shapes: one error naming the
    first missing, unexpected and mismatched keys (``what`` names the model)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"{label} {len(keys)} (first: {keys[0]})"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("mismatched shape (file vs model)", mismatched),
            )
            if keys
        ]
        raise PruneflowError(f"{source} does not fit {what}: " + "; ".join(parts))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def load_trained(model: nn.Module, path: str | Path, what: str) -> None:
    """Read ``path`` (:func:`read_state_dict`) into ``model`` (:func:`fit_state_dict`)."""
    fit_state_dict(model, read_state_dict(path), path, what)
