import numpy as np
import pytest
import torch

from pruneflow.checkpoint import load_checkpoint, save_checkpoint, sidecar
from pruneflow.config import TrainParams
from pruneflow.data import load_dataset
from pruneflow.errors import PruneflowError
from pruneflow.models import MODEL_NAMES, build, prunable_layers
from pruneflow.train import evaluate, lr_at, seeded_build, train


@pytest.mark.parametrize(
    ("name", "shape", "n_prunable"),
    [
        ("lenet300100", (1, 8, 8), 3),
        ("mlp1024", (1, 28, 28), 4),
        ("smallcnn", (1, 8, 8), 7),
        ("smallcnn", (1, 28, 28), 7),
        ("resnet18_cifar", (3, 32, 32), 21),
        ("mobilenet_v2", (1, 32, 32), 53),
        ("resnet50", (3, 32, 32), 54),
    ],
)
def test_models_build_run_and_list_prunable_layers(name, shape, n_prunable):
    model = build(name, 7, shape).eval()
    assert model(torch.randn(2, *shape)).shape == (2, 7)
    layers = prunable_layers(model)
    assert len(layers) == n_prunable
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], (torch.nn.Conv2d, torch.nn.Linear)) for n in layers)


def test_resnet18_cifar_has_cifar_stem():
    model = build("resnet18_cifar", 10, (3, 32, 32))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)


def test_model_errors():
    with pytest.raises(PruneflowError, match="unknown model 'vgg'"):
        build("vgg", 10, (3, 32, 32))
    with pytest.raises(PruneflowError, match="no prunable"):
        prunable_layers(torch.nn.Sequential(torch.nn.ReLU()))
    assert "lenet300100" in MODEL_NAMES


def test_lr_schedules():
    cosine = TrainParams(epochs=10, lr=1.0, schedule="cosine")
    assert lr_at(0, cosine) == 1.0 and lr_at(5, cosine) == pytest.approx(0.5)
    step = TrainParams(epochs=30, lr=1.0, schedule="step", step_size=10, gamma=0.1)
    assert lr_at(9, step) == 1.0 and lr_at(10, step) == pytest.approx(0.1)


def _train_digits(seed: int):
    data = load_dataset("digits")
    idx = np.arange(600)
    cfg = TrainParams(epochs=3, batch_size=32, lr=0.05, seed=seed)
    model = seeded_build("lenet300100", 10, data.in_shape, seed)
    history = train(model, data, idx, data.targets, cfg)
    return model, history, data


def test_training_is_deterministic_and_learns():
    a, hist_a, data = _train_digits(0)
    b, hist_b, _ = _train_digits(0)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert hist_a.loss == hist_b.loss
    c, _, _ = _train_digits(1)
    assert not torch.equal(a.fc1.weight, c.fc1.weight)
    _, acc = evaluate(a, data, np.arange(600, 1797), data.targets)
    assert acc > 0.85


def test_max_steps_ends_a_run_within_its_last_epoch():
    data = load_dataset("digits")
    cfg = TrainParams(epochs=3, batch_size=100, lr=0.05)  # 6 steps per epoch over 600 images
    steps = []
    model = seeded_build("lenet300100", 10, data.in_shape, 0)
    history = train(
        model,
        data,
        np.arange(600),
        data.targets,
        cfg,
        on_step=lambda i, _: steps.append(i),
        max_steps=8,
    )
    assert steps == list(range(1, 9)) and len(history.loss) == 2
    # the cap only ends the run: its first epoch is the uncapped run's, step for step
    uncapped = seeded_build("lenet300100", 10, data.in_shape, 0)
    assert train(uncapped, data, np.arange(600), data.targets, cfg).loss[0] == history.loss[0]
    with pytest.raises(PruneflowError, match="at least one step"):
        train(model, data, np.arange(600), data.targets, cfg, max_steps=0)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    model, _, data = _train_digits(0)
    path = tmp_path / "m" / "dense.safetensors"
    arch = {"name": "lenet300100", "num_classes": 10, "in_shape": [1, 8, 8]}
    save_checkpoint(path, model, arch, {"seed": 0, "metrics": {"acc": 1.0}})
    loaded, meta = load_checkpoint(path)
    assert meta["seed"] == 0 and meta["arch"] == arch
    x = data.images(np.arange(5))
    assert torch.equal(loaded.eval()(x), model.eval()(x))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(PruneflowError, match="corrupt or truncated safetensors"):
        load_checkpoint(path)
    meta_file = sidecar(path)
    save_checkpoint(path, model, {**arch, "name": "mlp1024"}, {})
    with pytest.raises(PruneflowError, match="does not fit model mlp1024|shape"):
        load_checkpoint(path)
    meta_file.write_text("{broken")
    with pytest.raises(PruneflowError, match="corrupt JSON"):
        load_checkpoint(path)
