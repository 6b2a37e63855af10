"""A model the runtime cannot take apart runs whole on torch with masked layers: its outputs
are the masked model's, the timing table says so (backend ``torch_whole``, metadata
``whole_model``) and predicts 1x at every level, and the measured speedup of a pruned copy is
the masked torch model's against the dense one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pruneflow.models import build, prunable_layers
from pruneflow.spdy.dp import predicted_speedup
from pruneflow.timing.layers import ExecLayer
from pruneflow.timing.profiler import ProfileSettings, exact_mask, profile_model
from pruneflow.timing.runtime import WHOLE_MODEL, SparseRuntime
from pruneflow.timing.table import read_timing_table, time_matrix, write_timing_table

REPO = Path(__file__).resolve().parent.parent
SHAPE = (3, 16, 16)
FUNCTIONAL = "tests.user_models.functional:make"
UNTRACEABLE = "tests.user_models.functional:make_untraceable"


def _model_and_masks(name: str, sparsity: float = 0.9):
    torch.manual_seed(0)
    model = build(name, 4, SHAPE).eval()
    rng = np.random.default_rng(0)
    modules = dict(model.named_modules())
    masks = {n: exact_mask(modules[n].weight.shape, sparsity, rng) for n in prunable_layers(model)}
    return model, masks


def _masked(name: str, model: nn.Module, masks) -> nn.Module:
    out = build(name, 4, SHAPE)
    out.load_state_dict(model.state_dict())
    modules = dict(out.named_modules())
    with torch.no_grad():
        for n, m in masks.items():
            modules[n].weight.mul_(m.to(torch.float32))
    return out.eval()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (FUNCTIONAL, "uses the parameters of 'body' without calling it"),
        (UNTRACEABLE, "taken apart it fails: AttributeError"),
    ],
)
def test_a_model_it_cannot_take_apart_runs_whole_with_masked_layers(monkeypatch, name, reason):
    monkeypatch.chdir(REPO)
    model, masks = _model_and_masks(name)
    x = torch.randn(3, *SHAPE)
    runtime = SparseRuntime(model, "csr_numba", masks=masks, example=x)
    assert runtime.whole is not None and reason in runtime.whole
    assert set(runtime.backends.values()) == {WHOLE_MODEL}
    assert runtime.describe()["whole"] == runtime.whole
    # nothing runs on a sparse kernel: the net is the user's torch module, masks multiplied in
    assert not any(isinstance(m, ExecLayer) for m in runtime.net.modules())
    with torch.no_grad():
        torch.testing.assert_close(runtime(x), _masked(name, model, masks)(x), rtol=0, atol=0)
    assert abs(runtime.sparsities["body"] - 0.9) < 0.01


def test_a_model_it_can_take_apart_is_not_run_whole(monkeypatch):
    monkeypatch.chdir(REPO)
    model, masks = _model_and_masks("tests.user_models.branchy:make")
    runtime = SparseRuntime(model, "csr_numba", masks=masks, example=torch.randn(2, *SHAPE))
    assert runtime.whole is None and "csr_numba" in set(runtime.backends.values())


def test_the_timing_table_says_whole_and_the_speedup_is_honest(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    torch.set_num_threads(1)
    model, masks = _model_and_masks(FUNCTIONAL)
    x = torch.randn(8, *SHAPE)
    settings = ProfileSettings(
        levels=[0.0, 0.5, 0.9], batch_size=8, skip_first_last=False, max_seconds=0.05
    )
    table, meta = profile_model(model, FUNCTIONAL, calib=x, settings=settings)
    assert set(table["backend"]) == {WHOLE_MODEL}
    assert "without calling it" in meta["whole_model"]
    path = write_timing_table(tmp_path / "timing.parquet", table, meta)
    table, meta = read_timing_table(path, FUNCTIONAL, prunable_layers(model))
    times = time_matrix(table, meta["layers"])
    # masked layers save no time on torch: the sparsest profile predicts exactly 1x
    sparsest = [len(meta["levels"]) - 1] * len(meta["layers"])
    dense_total, prunable = float(meta["dense_total_ms"]), float(meta["prunable_dense_ms"])
    assert predicted_speedup(times, sparsest, dense_total, prunable) == pytest.approx(1.0)

    # the pruned model, run from that table, is the masked torch model: the same torch ops as
    # the dense one, no sparse kernel that a measured speedup could come from
    pruned = SparseRuntime.from_table(model, table, masks=masks)
    dense = SparseRuntime(model, "dense", example=x)
    assert pruned.whole and dense.whole
    assert not any(isinstance(m, ExecLayer) for m in pruned.net.modules())
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), _masked(FUNCTIONAL, model, masks)(x), rtol=0, atol=0)
