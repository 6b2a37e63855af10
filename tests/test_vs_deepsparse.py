"""bench/vs_deepsparse.py's parts that need no DeepSparse: the folded-BN ONNX export that
DeepSparse compiles, and the one line it prints where DeepSparse cannot run."""

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pruneflow.export.onnx import run_onnx

BENCH = Path(__file__).resolve().parent.parent / "bench" / "vs_deepsparse.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("vs_deepsparse", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smallcnn_exports_as_conv_relu_with_bn_folded_and_equals_torch(bench, tmp_path):
    model = bench.bench_model("smallcnn", seed=0)
    bn = model.conv1[1]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # a real fold
    masked = bench.masked_copy(model, bench.magnitude_masks(model, "smallcnn", 0.9))
    conv3 = masked.conv3[0].weight
    assert (conv3 == 0).float().mean().item() == pytest.approx(0.9, abs=1e-3)
    path = bench.export_folded_onnx(masked, tmp_path / "smallcnn.onnx")
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" not in ops and {"Conv", "Relu", "Gemm"} <= ops
    x = torch.randn(8, *bench.IN_SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = masked(x).numpy()
    np.testing.assert_allclose(run_onnx(path, x), expected, rtol=1e-4, atol=1e-4)


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"build_venv": None, "venv": None, **kw})


def test_without_a_venv_deepsparse_is_skipped_with_one_line(bench, tmp_path, capsys):
    assert bench.start_deepsparse(_args(), tmp_path) is None
    out, err = capsys.readouterr()
    assert err.strip() == (
        "DeepSparse skipped: no DeepSparse venv given "
        "(--build-venv DIR builds one with deepsparse==1.8.0)"
    )
    line = json.loads(out)
    assert line["figure"] == "deepsparse_skipped" and "no DeepSparse venv" in line["reason"]


def test_a_folder_that_is_no_venv_is_skipped_with_one_line(bench, tmp_path, capsys):
    assert bench.start_deepsparse(_args(venv=tmp_path / "nothing"), tmp_path) is None
    err = capsys.readouterr().err.strip()
    assert err == f"DeepSparse skipped: {tmp_path / 'nothing'} is not a venv (no bin/python)"
