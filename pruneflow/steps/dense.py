"""Step ``train_dense``: train the dense model on the noisy labels, evaluate it, checkpoint it.

Writes ``dense.safetensors`` + ``dense.json`` (architecture, params, metrics, seed) and the DVC
metrics file ``metrics/train_dense/<dataset>-<model>.json``. Test accuracy is always on clean
labels; the training split is scored both on the noisy labels it was trained on (how well it
memorised the noise) and on the true labels.

With ``model.weights`` (a trained checkpoint of the user's) nothing is trained: the weights are
loaded (names and shapes checked, :mod:`pruneflow.models.weights`), evaluated on the same
splits, and written as the same checkpoint and metrics, so every later step is unchanged. The
file's content hash is an input of the step; a user model's source file is part of its
environment (its fingerprint), so editing it re-runs the step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from pruneflow import layout, wallclock
from pruneflow.checkpoint import save_checkpoint, sidecar
from pruneflow.config import Params, TrainParams
from pruneflow.errors import PruneflowError
from pruneflow.io import file_hash, write_json
from pruneflow.models.sources import check_output, user_code
from pruneflow.models.weights import load_trained
from pruneflow.runtime import configure, progress_enabled
from pruneflow.steps.base import Step
from pruneflow.steps.data import load_data, read_labels
from pruneflow.train import evaluate, seeded_build, train

# what dense training reads: the images (not the split or noise: labels.parquet is an input)
DATA_KEYS = ("data.dataset", "data.root", "data.image_size")
TRAIN_KEYS = tuple(f"train.{key}" for key in TrainParams.model_fields)


def _compute(p: Params) -> dict[str, Any]:
    configure(p.runtime.threads, p.runtime.flush_denormal)
    frame, meta = read_labels(p)
    data = load_data(p)
    split = frame["split"].to_numpy()
    noisy, true = frame["label"].to_numpy(), frame["true_label"].to_numpy()
    train_idx = np.flatnonzero(split == "train")
    model = seeded_build(p.model.name, data.num_classes, data.in_shape, p.train.seed)
    check_output(model, p.model.name, data.in_shape, data.num_classes)
    source = load_user_weights(p, model)
    if source is None:
        with wallclock.timed("train"):
            history = train(
                model,
                data,
                train_idx,
                noisy,
                p.train,
                progress_enabled(p.runtime.progress),
                description=f"dense {p.model.name}",
            )
        epochs = p.train.epochs
    else:
        history, epochs = None, 0
    metrics: dict[str, Any] = {"epochs": epochs}
    if source is not None:
        metrics["weights"] = source
    for name, idx, labels in (
        ("train_noisy", train_idx, noisy),
        ("train_true", train_idx, true),
        ("val", np.flatnonzero(split == "val"), true),
        ("test", np.flatnonzero(split == "test"), true),
    ):
        loss, acc = evaluate(model, data, idx, labels)
        metrics[f"{name}_acc"], metrics[f"{name}_loss"] = acc, loss
    noisy_train = train_idx[frame["is_noisy"].to_numpy()[train_idx]]
    metrics["memorised_noise"] = (
        evaluate(model, data, noisy_train, noisy)[1] if noisy_train.size else None
    )
    arch = {"name": p.model.name, "num_classes": data.num_classes, "in_shape": list(data.in_shape)}
    save_checkpoint(
        layout.dense_checkpoint(p),
        model,
        arch,
        {
            "params": {
                "train": p.train.model_dump(),
                "noise": meta.get("noise"),
                "dataset": p.data.dataset,
            },
            "metrics": metrics,
            "history": {"loss": history.loss, "acc": history.acc} if history else None,
            "seed": p.train.seed,
        },
    )
    write_json(layout.metrics_file(p, "train_dense"), metrics)
    return metrics


def weights_path(p: Params) -> Path | None:
    """``model.weights`` as a path (None when the model is trained here)."""
    if p.model.weights is None:
        return None
    path = Path(p.model.weights)
    if not path.is_file():
        raise PruneflowError(f"model.weights: no file {path} (for model {p.model.name})")
    return path


def load_user_weights(p: Params, model: nn.Module) -> dict[str, str] | None:
    """``model.weights`` loaded into ``model`` (names and shapes checked), in place of dense
    training; returns what the step records of it (path and content hash), None without it.

    Every method's dense step (``train_dense``, ``sdd_dense``, CHEX's dense reference) starts
    from the user's checkpoint through this one function."""
    weights = weights_path(p)
    if weights is None:
        return None
    load_trained(model, weights, f"model {p.model.name}")
    return {"path": str(weights), "hash": file_hash(weights)}


def weights_inputs(p: Params) -> list[Path]:
    """``model.weights`` as a step input (its content hash keys the cache), or nothing."""
    weights = weights_path(p)
    return [weights] if weights is not None else []


def model_code(p: Params) -> dict[str, Any] | None:
    """The content hashes of the user's model and data modules (None for the zoo's, torchvision's
    and the built-in data sets): part of the fingerprint, so editing them re-runs the step."""
    return user_code([p.model.name, p.data.dataset])


def _inputs(p: Params) -> list[Path]:
    return [layout.labels_table(p), *weights_inputs(p)]


TRAIN_DENSE = Step(
    name="train_dense",
    reads=(*DATA_KEYS, "model.name", "model.weights", *TRAIN_KEYS),
    inputs=_inputs,
    outputs=lambda p: [
        layout.dense_checkpoint(p),
        sidecar(layout.dense_checkpoint(p)),
        layout.metrics_file(p, "train_dense"),
    ],
    compute=_compute,
    description="dense training on the noisy labels (or model.weights loaded) + evaluation on "
    "clean test labels",
    environment=model_code,
)
