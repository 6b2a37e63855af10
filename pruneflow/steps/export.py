"""Steps ``spdy_export`` and ``chex_export``: a pruned model, taken away.

``spdy_export`` (scope ``spdy:MODEL``) exports the gradual-pruning run of ``export.profile``,
``export.target`` and ``export.seed``; ``chex_export`` (scope ``chex:MODEL``) the extracted,
physically smaller CHEX model. Both write, under ``export/<dataset>/<model>/<run>/``:

* ``model.safetensors``: the state dict (zeros where pruned; CHEX: the extracted shapes), with
  the per-layer sparsity, model name and source run in its metadata;
* ``masks.safetensors``: SPDY: each pruned layer's weight mask; CHEX: each channel group's;
* ``model.onnx`` and ``dense.onnx`` (opset ``export.opset``, dynamic batch): the pruned model
  and its dense reference (SPDY: the dense checkpoint; CHEX: the full-size masked model);

and the DVC metrics ``metrics/<step>/<dataset>-<model>.json``: the largest onnxruntime-vs-torch
difference on ``export.check_samples`` test images (past ``atol + rtol * |torch|`` the step
fails), the agreement of their predicted classes, and onnxruntime's median latency of both
graphs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneflow import layout
from pruneflow.checkpoint import load_checkpoint, sidecar
from pruneflow.chex import paths
from pruneflow.chex.groups import find_groups
from pruneflow.chex.store import load_extracted, load_masked, load_masks
from pruneflow.config import Params
from pruneflow.export import check_onnx, export_onnx, layer_masks, ort_latency_ms, save_pruned
from pruneflow.export.onnx import run_onnx
from pruneflow.io import write_json
from pruneflow.models.sources import user_code
from pruneflow.runtime import configure
from pruneflow.steps.base import Step
from pruneflow.steps.data import load_data, read_labels
from pruneflow.steps.spdy_gmp import run_checkpoint
from pruneflow.steps.spdy_inputs import dense_model, inputs_of_dense

FILES = ("model.safetensors", "masks.safetensors", "model.onnx", "dense.onnx")
_DATA = ("data.dataset", "data.root", "data.image_size", "model.name")


def spdy_run(p: Params) -> dict[str, Any]:
    """The gradual-pruning run ``export`` names, as spdy_gmp's item."""
    e = p.export
    target = e.target if e.target is not None else max(p.spdy.targets)
    return {"target": float(target), "profile": e.profile, "seed": int(e.seed)}


def spdy_export_dir(p: Params) -> Path:
    it = spdy_run(p)
    return layout.export_dir(
        p, "spdy", f"{it['profile']}-{layout.target_name(it['target'])}-s{it['seed']}"
    )


def chex_export_dir(p: Params) -> Path:
    return layout.export_dir(p, "chex", "")


def _test_images(p: Params) -> tuple[torch.Tensor, np.ndarray, tuple[int, ...]]:
    frame, _ = read_labels(p)
    data = load_data(p)
    idx = np.flatnonzero(frame["split"].to_numpy() == "test")[: p.export.check_samples]
    return data.images(idx), frame["true_label"].to_numpy()[idx], tuple(data.in_shape)


def _write(
    p: Params,
    folder: Path,
    step: str,
    pruned: nn.Module,
    dense: nn.Module,
    masks: dict[str, torch.Tensor],
    info: dict[str, Any],
) -> dict[str, Any]:
    configure(p.runtime.threads, p.runtime.flush_denormal)
    e = p.export
    images, labels, in_shape = _test_images(p)
    weights, mask_file, onnx_file, dense_onnx = (folder / f for f in FILES)
    sparsity = save_pruned(weights, mask_file, pruned.eval(), masks, info)
    export_onnx(pruned, in_shape, onnx_file, e.opset)
    export_onnx(dense.eval(), in_shape, dense_onnx, e.opset)
    diff = check_onnx(onnx_file, pruned, images, e.atol, e.rtol)
    dense_diff = check_onnx(dense_onnx, dense, images, e.atol, e.rtol)
    with torch.no_grad():
        torch_pred = pruned(images).argmax(1).numpy()
    ort_pred = run_onnx(onnx_file, images).argmax(1)
    timing = {"batch_size": e.batch_size, "repeats": e.repeats, "threads": e.threads}
    ms = ort_latency_ms(onnx_file, in_shape, **timing)
    dense_ms = ort_latency_ms(dense_onnx, in_shape, **timing)
    metrics = {
        **info,
        "opset": e.opset,
        "check_samples": int(images.shape[0]),
        "max_abs_diff_onnx_vs_torch": diff,
        "max_abs_diff_dense_onnx_vs_torch": dense_diff,
        "onnx_agrees_with_torch": float((torch_pred == ort_pred).mean()),
        "check_acc_onnx": float((ort_pred == labels).mean()),
        "ort_ms": ms,
        "ort_ms_dense": dense_ms,
        "ort_speedup": dense_ms / ms,
        "ort": timing,
        "sparsity": sparsity,
    }
    write_json(layout.metrics_file(p, step), metrics)
    return {k: v for k, v in metrics.items() if not isinstance(v, dict)}


def _spdy_compute(p: Params) -> dict[str, Any]:
    ckpt = run_checkpoint(p, spdy_run(p))
    pruned, meta = load_checkpoint(ckpt)
    masks = layer_masks(pruned, sorted(meta["layer_sparsity"]))
    info = {"model": p.model.name, "method": "spdy", **spdy_run(p), "test_acc": meta["test_acc"]}
    return _write(p, spdy_export_dir(p), "spdy_export", pruned, dense_model(p), masks, info)


def _spdy_inputs(p: Params) -> list[Path]:
    ckpt = run_checkpoint(p, spdy_run(p))  # names a run that is not configured
    return [*inputs_of_dense(p), ckpt, sidecar(ckpt)]


def _outputs(folder: Path, p: Params, step: str) -> list[Path]:
    return [*(folder / f for f in FILES), layout.metrics_file(p, step)]


SPDY_EXPORT = Step(
    name="spdy_export",
    reads=(*_DATA, "spdy.targets", "spdy.gmp.profiles", "spdy.gmp.seeds", "export"),
    inputs=_spdy_inputs,
    outputs=lambda p: _outputs(spdy_export_dir(p), p, "spdy_export"),
    compute=_spdy_compute,
    description="SPDY's gradually pruned model -> safetensors + ONNX, checked in onnxruntime",
    environment=lambda p: user_code([p.model.name, p.data.dataset]),
)


def _chex_compute(p: Params) -> dict[str, Any]:
    sub, meta = load_extracted(paths.extracted_checkpoint(p))
    masked, _ = load_masked(paths.masked_checkpoint(p))
    example = torch.zeros(2, *meta["arch"]["in_shape"])
    groups = find_groups(masked, example, p.chex.include, p.chex.exclude, p.model.name)
    masks = load_masks(paths.masks_file(p), groups)
    info = {
        "model": p.model.name,
        "method": "chex",
        "channels": meta["channels"],
        "test_acc": meta["metrics"]["test_acc"],
    }
    return _write(p, chex_export_dir(p), "chex_export", sub, masked, masks, info)


def _chex_inputs(p: Params) -> list[Path]:
    extracted, masked = paths.extracted_checkpoint(p), paths.masked_checkpoint(p)
    return [
        layout.labels_table(p),
        extracted,
        sidecar(extracted),
        masked,
        sidecar(masked),
        paths.masks_file(p),
    ]


CHEX_EXPORT = Step(
    name="chex_export",
    reads=(*_DATA, "export", "chex.include", "chex.exclude"),
    inputs=_chex_inputs,
    outputs=lambda p: _outputs(chex_export_dir(p), p, "chex_export"),
    compute=_chex_compute,
    description="CHEX's extracted model -> safetensors + ONNX, checked in onnxruntime",
    environment=lambda p: user_code([p.model.name, p.data.dataset]),
)
