"""chex_export: CHEX's extracted model exported as safetensors + ONNX, checked in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from safetensors.torch import load_file

from pruneflow import api, config
from pruneflow.chex import paths
from pruneflow.chex.store import load_extracted
from pruneflow.config import Params
from pruneflow.steps.chex import CHEX_EXTRACT, CHEX_TRAIN
from pruneflow.steps.data import PREPARE
from pruneflow.steps.export import CHEX_EXPORT, chex_export_dir

CHEX = {
    "dataset": "digits",
    "train": {"epochs": 1, "batch_size": 256, "lr": 0.1},
    "delta_t": 0.5,
    "t_max": 1.0,
    "latency": {"repeats": 2},
}


def test_chex_extracted_model_exports_and_runs_in_onnxruntime(workdir):
    base = Params.model_validate(
        {"runtime": {"threads": 1, "progress": "off"}, "export": {"repeats": 2}}
    )
    p = config.updated(base, chex=CHEX)
    PREPARE.run(config.scoped(p, "chex"))
    q = config.scoped(p, "chex:resnet_mini")
    CHEX_TRAIN.run(q)
    CHEX_EXTRACT.run(q)
    metrics = CHEX_EXPORT.run(q)["summary"]
    assert metrics["max_abs_diff_onnx_vs_torch"] < 1e-3 and metrics["onnx_agrees_with_torch"] == 1.0
    folder = chex_export_dir(q)
    sub, meta = load_extracted(paths.extracted_checkpoint(q))
    state = load_file(str(folder / "model.safetensors"))
    assert state.keys() == sub.state_dict().keys()
    masks = load_file(str(folder / "masks.safetensors"))
    assert {k: int(v.sum()) for k, v in masks.items()} == meta["channels"]
    x = torch.randn(5, 1, 8, 8)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, sub.eval()(x).numpy(), atol=1e-4, rtol=1e-3)
    dense = ort.InferenceSession(str(folder / "dense.onnx"), providers=["CPUExecutionProvider"])
    assert dense.run(None, {"images": x.numpy()})[0].shape == (5, 10)
    # the same extracted model through the notebook API
    (workdir / "params.yaml").write_text("chex:\n  dataset: digits\n")
    run = api.Run()  # the extracted model's path depends on the data set and model only
    torch.testing.assert_close(run.pruned_model("chex")(x), sub.eval()(x))
