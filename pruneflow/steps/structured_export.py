"""``structured_export``: every realized model as ONNX, checked and timed in onnxruntime.

The thinned model is an ordinary dense model with fewer channels, so it exports through the
project's export path (:func:`pruneflow.export.onnx.export_onnx`, opset ``export.opset``,
dynamic batch) like any other; its logits in onnxruntime are checked against torch's on
``export.check_samples`` test images (``export.atol``, ``export.rtol``), and its onnxruntime
speedup over the dense model's ONNX is measured the way the realize step measures torch:
both sessions alternating in ``structured.measure_passes`` passes on the timing batch, the
table's quantile of the pooled runs; the torch speedup of the same pair is measured beside it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open

from pruneflow import layout
from pruneflow.checkpoint import sidecar
from pruneflow.config import Params
from pruneflow.export.onnx import INPUT, OUTPUT, check_onnx, export_onnx, ort_session, run_onnx
from pruneflow.io import load_tensors, write_json, write_parquet
from pruneflow.steps.base import Step
from pruneflow.steps.structured import _DATA, _GRID, _dense_inputs, _grid, _measured
from pruneflow.structured import paths
from pruneflow.structured.baselines import rebuild
from pruneflow.timing.measure import measure_speedups
from pruneflow.timing.table import host_description


def _realized(p: Params, dense: torch.nn.Module, groups: list, target: float) -> torch.nn.Module:
    path = paths.realized_model(p, target)
    with safe_open(str(path), framework="pt") as f:
        widths = json.loads((f.metadata() or {})["widths"])
    thin = rebuild(dense, groups, widths)
    thin.load_state_dict(load_tensors(path))
    return thin.eval()


def _export(p: Params) -> dict[str, Any]:
    data, _, test_idx, _, model, example = _dense_inputs(p)
    groups, _, _, _ = _grid(p, model, example)
    e, s = p.export, p.structured
    in_shape = tuple(data.in_shape)
    images = data.images(test_idx[: e.check_samples])
    dense_file = paths.onnx_model(p, None)
    export_onnx(model, in_shape, dense_file, e.opset)
    dense_diff = check_onnx(dense_file, model, images, e.atol, e.rtol)
    gen = torch.Generator().manual_seed(s.timing.seed)
    x = torch.randn((s.timing.batch_size, *in_shape), generator=gen)
    feed = {INPUT: x.numpy().astype(np.float32)}
    dense_session = ort_session(dense_file, s.timing.threads)
    rows = []
    for target in s.targets:
        thin = _realized(p, model, groups, target)
        file = paths.onnx_model(p, target)
        export_onnx(thin, in_shape, file, e.opset)
        diff = check_onnx(file, thin, images, e.atol, e.rtol)
        with torch.no_grad():
            torch_pred = thin(images).argmax(1).numpy()
        agrees = float((run_onnx(file, images).argmax(1) == torch_pred).mean())
        session = ort_session(file, s.timing.threads)
        (ort_speedup,) = measure_speedups(
            lambda: dense_session.run([OUTPUT], feed),
            [lambda session=session: session.run([OUTPUT], feed)],
            repeats=s.measure_repeats,
            passes=s.measure_passes,
            quantile=s.timing.quantile,
        )
        torch_speedup = _measured(p, model, thin, x)
        rows.append(
            {
                "target": float(target),
                "opset": e.opset,
                "check_samples": int(images.shape[0]),
                "max_abs_diff": diff,
                "max_abs_diff_dense": dense_diff,
                "agrees_with_torch": agrees,
                "ort_speedup": ort_speedup,
                "torch_speedup": torch_speedup,
                "batch_size": s.timing.batch_size,
                "threads": s.timing.threads,
            }
        )
    frame = pd.DataFrame(rows, columns=list(paths.EXPORT_COLUMNS))
    meta = {"host": host_description(s.timing.threads), "load_1min": os.getloadavg()[0]}
    write_parquet(paths.export_table(p), frame, meta)
    metrics = {
        f"{r['target']}x": {
            k: round(float(r[k]), 6)
            for k in ("ort_speedup", "torch_speedup", "max_abs_diff", "agrees_with_torch")
        }
        for r in rows
    }
    write_json(layout.metrics_file(p, "structured_export"), metrics)
    return metrics


STRUCTURED_EXPORT = Step(
    name="structured_export",
    reads=(
        *_DATA,
        *_GRID,
        "structured.targets",
        "structured.timing",
        "structured.measure_repeats",
        "structured.measure_passes",
        "structured.measure_block_seconds",
        "export",
    ),
    inputs=lambda p: [
        layout.labels_table(p),
        paths.dense_checkpoint(p),
        sidecar(paths.dense_checkpoint(p)),
        *(paths.realized_model(p, t) for t in p.structured.targets),
    ],
    outputs=lambda p: [
        paths.onnx_model(p, None),
        *(paths.onnx_model(p, t) for t in p.structured.targets),
        paths.export_table(p),
        layout.metrics_file(p, "structured_export"),
    ],
    compute=_export,
    description="the realized models as ONNX, checked and timed in onnxruntime",
    environment=lambda p: host_description(p.structured.timing.threads),
)
