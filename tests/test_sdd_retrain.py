"""Sparse double descent: masks through retraining, rewind points, re-initialisation."""

import numpy as np
import pytest
import torch

from pruneflow.config import TrainParams
from pruneflow.data import ImageData
from pruneflow.errors import PruneflowError
from pruneflow.models import prunable_layers
from pruneflow.sdd.retrain import (
    apply_start,
    clone_state,
    derive_seed,
    fresh_state,
    full_masks,
    masked_weights_are_zero,
    prune,
    retrain,
    start_state,
    train_with_rewind_point,
)
from pruneflow.sparsity.masks import sparsity
from pruneflow.train import seeded_build

SHAPE = (1, 4, 4)


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 96)
    raw = torch.from_numpy(rng.integers(0, 256, (96, *SHAPE), dtype=np.uint8))
    raw[:, 0, 0, 0] = torch.from_numpy(targets * 100).to(torch.uint8)  # learnable signal
    data = ImageData("tiny", 3, SHAPE, targets, None, raw=raw)
    return data, np.arange(96), targets


def _model(seed=0):
    torch.set_num_threads(1)
    return seeded_build("lenet300100", 3, SHAPE, seed)


CFG = TrainParams(
    epochs=3,
    batch_size=16,
    optimizer="sgd",
    lr=0.05,
    momentum=0.9,
    weight_decay=0.01,
    schedule="constant",
)


def test_pruned_weights_stay_zero_through_retraining(tiny):
    data, idx, labels = tiny
    model = _model()
    layers = prunable_layers(model)
    before = clone_state(model)
    masks = prune(model, full_masks(model, layers), "magnitude", 0.8)
    assert sparsity(masks) == pytest.approx(0.8, abs=1e-4)
    apply_start(model, clone_state(model), masks)
    retrain(model, masks, data, idx, labels, CFG)  # momentum + weight decay would move zeros
    assert masked_weights_are_zero(model, masks)
    kept_moved = (model.fc1.weight.detach() - before["fc1.weight"])[masks["fc1"]]
    assert kept_moved.abs().max() > 0  # the kept weights did train


def test_iterative_pruning_only_removes_more(tiny):
    model = _model()
    layers = prunable_layers(model)
    m1 = prune(model, full_masks(model, layers), "random", 0.5, seed=1)
    m2 = prune(model, m1, "random", 0.75, seed=2)
    for name in layers:
        assert not (m2[name] & ~m1[name]).any()
    assert sparsity(m2) == pytest.approx(0.75, abs=1e-4)


def test_rewind_point_is_the_weights_after_epoch_k(tiny):
    data, idx, labels = tiny
    full = _model()
    _, init, rewind = train_with_rewind_point(full, data, idx, labels, CFG, rewind_epoch=1)
    short = _model()  # same seed: same init, same batch order for the first epoch
    assert all(torch.equal(short.state_dict()[k], init[k]) for k in init)
    train_with_rewind_point(short, data, idx, labels, CFG.model_copy(update={"epochs": 1}), 1)
    for key, value in short.state_dict().items():
        assert torch.allclose(rewind[key], value, atol=1e-6), key
    final = full.state_dict()
    assert not torch.allclose(rewind["fc1.weight"], final["fc1.weight"])
    assert not torch.allclose(rewind["fc1.weight"], init["fc1.weight"])


def test_rewind_epoch_zero_is_the_initialisation_and_beyond_training_fails(tiny):
    data, idx, labels = tiny
    model = _model()
    start = clone_state(model)
    _, init, rewind = train_with_rewind_point(model, data, idx, labels, CFG, rewind_epoch=0)
    assert all(torch.equal(rewind[k], start[k]) and torch.equal(init[k], start[k]) for k in start)
    with pytest.raises(PruneflowError, match="rewind epoch 4"):
        train_with_rewind_point(_model(), data, idx, labels, CFG, rewind_epoch=4)


def test_start_points_by_mode(tiny):
    data, idx, labels = tiny
    model = _model()
    layers = prunable_layers(model)
    _, init, rewind = train_with_rewind_point(model, data, idx, labels, CFG, rewind_epoch=1)
    trained = clone_state(model)
    masks = prune(model, full_masks(model, layers), "magnitude", 0.6)
    fresh = fresh_state("lenet300100", 3, SHAPE, derive_seed(0, 1, "init"))
    starts = {
        mode: apply_start(model, start_state(mode, trained, rewind, fresh), masks)
        for mode in ("finetune", "rewind", "reinit")
    }
    keep = masks["fc1"]
    assert torch.equal(starts["finetune"]["fc1.weight"][keep], trained["fc1.weight"][keep])
    assert torch.equal(starts["rewind"]["fc1.weight"][keep], rewind["fc1.weight"][keep])
    assert torch.equal(starts["rewind"]["fc1.bias"], rewind["fc1.bias"])
    for mode, state in starts.items():
        assert not state["fc1.weight"][~keep].any(), mode  # masks applied to every start
    reinit = starts["reinit"]["fc1.weight"][keep]
    for other in (init, rewind, trained):
        assert not torch.allclose(reinit, other["fc1.weight"][keep])
    with pytest.raises(PruneflowError, match="retrain mode 'lottery'"):
        start_state("lottery", trained, rewind, fresh)


def test_derived_seeds_differ_by_level_and_purpose():
    seeds = {derive_seed(s, lvl, p) for s in (0, 1) for lvl in range(4) for p in ("init", "train")}
    assert len(seeds) == 16
    assert derive_seed(3, 2, "scores") == derive_seed(3, 2, "scores")
