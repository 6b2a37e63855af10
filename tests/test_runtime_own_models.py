"""SparseRuntime on torchvision models and a user module with branches: every prunable layer
runs on a backend, and the outputs equal the masked dense model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pruneflow.models import build, prunable_layers
from pruneflow.timing.profiler import exact_mask
from pruneflow.timing.runtime import SparseRuntime

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "name",
    [
        "torchvision:resnet18",
        "torchvision:resnet34",
        "torchvision:resnet50",
        "torchvision:mobilenet_v2",
        "tests.user_models.branchy:make",
    ],
)
def test_runtime_matches_the_masked_dense_model(monkeypatch, name):
    monkeypatch.chdir(REPO)
    torch.manual_seed(0)
    shape = (3, 16, 16)
    model = build(name, 4, shape).eval()
    # BatchNorm with real statistics, so folding it is tested on non-trivial values
    with torch.no_grad():
        model.train()
        model(torch.randn(8, *shape))
        model.eval()
    rng = np.random.default_rng(0)
    modules = dict(model.named_modules())
    masks = {n: exact_mask(modules[n].weight.shape, 0.8, rng) for n in prunable_layers(model)}
    masked = build(name, 4, shape)
    masked.load_state_dict(model.state_dict())
    masked.eval()
    with torch.no_grad():
        for n, m in masks.items():
            dict(masked.named_modules())[n].weight.mul_(m.to(torch.float32))
    runtime = SparseRuntime(model, "csr_numba", masks=masks)
    assert runtime.traced
    assert set(runtime.backends) == set(prunable_layers(model))
    assert "csr_numba" in set(runtime.backends.values())
    x = torch.randn(3, *shape)
    with torch.no_grad():
        expected = masked(x)
    torch.testing.assert_close(runtime(x), expected, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("name", ["torchvision:resnet50", "torchvision:mobilenet_v2"])
def test_the_profiler_takes_them_apart_too(monkeypatch, tmp_path, name):
    from pruneflow.timing.backends import available_backends
    from pruneflow.timing.profiler import ProfileSettings, profile_model
    from pruneflow.timing.table import write_timing_table

    monkeypatch.chdir(REPO)
    torch.set_num_threads(1)
    model = build(name, 4, (3, 16, 16)).eval()
    settings = ProfileSettings(
        levels=[0.0, 0.9],
        batch_size=2,
        rounds=1,
        max_rounds=1,
        min_seconds=0.0,
        min_repeats=1,
        max_repeats=2,
        max_seconds=0.01,
        warmup=1,
    )
    table, meta = profile_model(model, name, in_shape=(3, 16, 16), settings=settings)
    names = prunable_layers(model)
    assert "whole_model" not in meta and meta["layers"] == names[1:-1]
    # per layer the fastest backend measured in situ (depthwise convs have no sparse kernel),
    # never the whole-model fallback
    assert set(table["backend"]) <= set(available_backends("cpu"))
    write_timing_table(tmp_path / "timing.parquet", table, meta)  # the schema's checks
