"""SparseRuntime: a pruned model on per-layer backends computes what the masked model does."""

from __future__ import annotations

import copy
import functools

import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from pruneflow.errors import PruneflowError
from pruneflow.models import build
from pruneflow.models.zoo import prunable_layers
from pruneflow.timing import SparseRuntime

# torch's CSR is checked layer by layer in test_timing_backends; on resnet18 it is slow to build
CASES = [
    ("mlp1024", (1, 8, 8), 6, ("dense", "csr", "csr_numba", "auto")),
    ("smallcnn", (1, 12, 12), 3, ("dense", "csr", "csr_numba", "direct_numba", "auto")),
    ("resnet18_cifar", (3, 8, 8), 2, ("dense", "csr_numba", "direct_numba")),
]


@functools.cache
def _model_and_masks(name: str, shape: tuple, sparsity: float = 0.8):
    """Built once per session (resnet18 takes a second): tests never modify them."""
    torch.manual_seed(0)
    model = build(name, 10, shape).eval()
    for mod in model.modules():  # non-trivial BN statistics, so that folding is exercised
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.normal_(1.0, 0.2)
            mod.bias.data.normal_(0.0, 0.2)
    gen = torch.Generator().manual_seed(1)
    masks = {
        n: (torch.rand(model.get_submodule(n).weight.shape, generator=gen) >= sparsity).float()
        for n in prunable_layers(model)
    }
    return model, masks


def _masked_reference(model: nn.Module, masks: dict, x: torch.Tensor) -> torch.Tensor:
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for n, m in masks.items():
            ref.get_submodule(n).weight.mul_(m)
        return ref(x)


@pytest.mark.parametrize("name,shape,batch,backends", CASES, ids=[c[0] for c in CASES])
def test_runtime_equals_masked_dense_model(
    name: str, shape: tuple, batch: int, backends: tuple
) -> None:
    model, masks = _model_and_masks(name, shape)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(batch, *shape)
    ref = _masked_reference(model, masks, x)
    for backend in backends:
        rt = SparseRuntime(model, backend, masks=masks)
        y = rt(x)
        assert rt.traced and rt.fused_relu  # BN folded, ReLUs fused
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5, msg=lambda m, b=backend: b + m)
        assert set(rt.backends) == set(prunable_layers(model))
        assert all(s == pytest.approx(0.8, abs=0.05) for s in rt.sparsities.values())
        if backend == "csr_numba":
            assert set(rt.backends.values()) == {"csr_numba"}
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the source is untouched


def test_runtime_without_folding_is_still_exact() -> None:
    model, masks = _model_and_masks("smallcnn", (1, 12, 12))
    x = torch.randn(2, 1, 12, 12)
    rt = SparseRuntime(model, "csr_numba", masks=masks, fold=False)
    assert not rt.traced and not rt.fused_relu
    torch.testing.assert_close(rt(x), _masked_reference(model, masks, x), rtol=1e-4, atol=1e-5)


def test_runtime_reads_torch_prune_reparametrisation() -> None:
    torch.manual_seed(0)
    model = build("lenet300100", 10, (1, 8, 8)).eval()
    for n in prunable_layers(model):
        prune.l1_unstructured(model.get_submodule(n), "weight", amount=0.9)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        ref = model(x)
    rt = SparseRuntime(model, "csr_numba")
    torch.testing.assert_close(rt(x), ref, rtol=1e-4, atol=1e-5)
    assert all(s == pytest.approx(0.9, abs=0.01) for s in rt.sparsities.values())


def test_explicit_backends_and_from_table() -> None:
    model, masks = _model_and_masks("mlp1024", (1, 8, 8), sparsity=0.9)
    rt = SparseRuntime(model, {"fc2": "csr_numba", "fc3": "csr"}, masks=masks)
    assert rt.backends == {"fc1": "dense", "fc2": "csr_numba", "fc3": "csr", "fc4": "dense"}
    table = pd.DataFrame(
        {
            "layer": ["fc1", "fc1", "fc2", "fc2"],
            "sparsity": [0.0, 0.9, 0.0, 0.9],
            "backend": ["dense", "csr", "dense", "csr_numba"],
        }
    )
    rt = SparseRuntime.from_table(model, table, masks=masks)
    assert rt.backends == {"fc1": "csr", "fc2": "csr_numba", "fc3": "dense", "fc4": "dense"}
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(rt(x), _masked_reference(model, masks, x), rtol=1e-4, atol=1e-5)
    assert rt.describe()["layers"]["fc2"]["backend"] == "csr_numba"


def test_runtime_errors_are_clear() -> None:
    model, masks = _model_and_masks("mlp1024", (1, 8, 8))
    with pytest.raises(PruneflowError, match="layers the model does not have: nope"):
        SparseRuntime(model, {"nope": "dense"})
    with pytest.raises(PruneflowError, match="unknown backend"):
        SparseRuntime(model, "nope")
    with pytest.raises(PruneflowError, match="has shape"):
        SparseRuntime(model, "dense", masks={"fc1": torch.ones(3, 3)})
    with pytest.raises(PruneflowError, match="no Conv2d/Linear"):
        SparseRuntime(model, "dense", masks={"flatten": torch.ones(3, 3)})
    with pytest.raises(PruneflowError, match="lacks columns"):
        SparseRuntime.from_table(model, pd.DataFrame({"layer": ["fc1"]}))
    with pytest.raises(PruneflowError, match="no prunable"):
        SparseRuntime(nn.Sequential(nn.ReLU()), "dense")
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(PruneflowError, match="cannot run layer '0'"):
        SparseRuntime(grouped, {"0": "csr_numba"})
    assert SparseRuntime(grouped, "csr_numba").backends == {"0": "dense"}  # global: falls back
