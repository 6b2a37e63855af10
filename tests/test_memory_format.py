"""Channels-last execution: same outputs, the caller's layout restored, a search's model kept."""

import numpy as np
import torch

from pruneflow import memory_format
from pruneflow.config import TrainParams
from pruneflow.data.datasets import ImageData
from pruneflow.models import build
from pruneflow.train import evaluate, train


def _conv_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build("smallcnn", 10, (1, 12, 12)).eval()


def test_channels_last_gives_the_same_outputs_and_restores_the_layout():
    model = _conv_model()
    x = torch.randn(16, 1, 12, 12)
    with torch.no_grad():
        reference = model(x)
        with memory_format.channels_last(model) as nhwc:
            assert nhwc and memory_format.is_channels_last(model)
            out = model(memory_format.as_channels_last(x))
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)
    assert not memory_format.is_channels_last(model)
    assert all(p.is_contiguous() for p in model.parameters())


def test_a_model_already_channels_last_stays_so():
    model = _conv_model()
    assert memory_format.convert(model)
    with memory_format.channels_last(model):
        pass
    assert memory_format.is_channels_last(model)


def test_models_without_convolutions_are_untouched():
    model = build("mlp1024", 10, (1, 28, 28))
    with memory_format.channels_last(model) as nhwc:
        assert not nhwc
    assert not memory_format.convert(model)
    assert memory_format.as_channels_last(torch.zeros(3, 5)).is_contiguous()


def test_evaluate_matches_a_plain_forward_pass_and_leaves_the_model_contiguous():
    model = _conv_model()
    raw = torch.randint(0, 256, (40, 1, 12, 12), dtype=torch.uint8)
    targets = np.arange(40) % 10
    data = ImageData("toy", 10, (1, 12, 12), targets, None, raw=raw)
    loss, acc = evaluate(model, data, np.arange(40), targets, batch_size=16)
    with torch.no_grad():
        out = model(data.images(np.arange(40)))
    expected = torch.nn.functional.cross_entropy(out, torch.as_tensor(targets)).item()
    assert abs(loss - expected) < 1e-4
    assert acc == (out.argmax(1).numpy() == targets).mean()
    assert not memory_format.is_channels_last(model)


def test_the_unsafe_layers_are_the_strided_1x1_convolutions_with_few_input_channels():
    assert memory_format.onednn_unsafe_convs(build("resnet_mini", 10, (1, 8, 8))) == [
        "stage2.shortcut.0"  # 8 input channels; stage3's has 16, the widest block
    ]
    for safe in ("smallcnn", "resnet18_cifar", "mlp1024"):
        assert memory_format.onednn_trains_safely(build(safe, 10, (3, 32, 32)))
    layers = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 1),  # stride 1: no reduce-to-unit-stride workspace
        torch.nn.Conv2d(8, 8, 3, stride=2),  # not 1x1
        torch.nn.Conv2d(32, 32, 1, stride=2, groups=4),  # 8 input channels per group
        torch.nn.Conv1d(4, 8, 1, stride=2),
    )
    assert memory_format.onednn_unsafe_convs(layers) == ["2", "3"]


def test_onednn_computes_the_weight_gradients_of_layers_the_rule_lets_it_train(monkeypatch):
    """On this host, against torch's native kernels: a strided 1x1 convolution at the rule's
    channel bound and a 3x3 one, on channels-last inputs (the layout that goes wrong)."""
    torch.manual_seed(0)
    for conv in (torch.nn.Conv2d(16, 8, 1, stride=2), torch.nn.Conv2d(3, 16, 3, padding=1)):
        assert memory_format.onednn_trains_safely(conv)
        x = torch.randn(32, conv.in_channels, 32, 32)
        grads = {}
        for onednn in (False, True):
            monkeypatch.setattr(torch.backends.mkldnn, "enabled", onednn)
            conv.zero_grad(set_to_none=True)
            conv(memory_format.as_channels_last(x)).square().sum().backward()
            grads[onednn] = conv.weight.grad.contiguous()
        error = (grads[True] - grads[False]).norm() / grads[False].norm()
        assert error < 1e-5, (conv, error)  # the bug's were off by 615x (oneDNN#6035)


def test_onednn_is_off_while_any_loop_trains_an_unsafe_model(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)  # restored after the test
    safe, unsafe = build("smallcnn", 10, (1, 8, 8)), build("resnet_mini", 10, (1, 8, 8))
    with memory_format.training_backend(safe) as onednn:
        assert onednn and torch.backends.mkldnn.enabled
    with memory_format.training_backend(unsafe) as first:
        assert not first and not torch.backends.mkldnn.enabled
        with memory_format.training_backend(unsafe) as second:  # nested: the same setting
            assert not second
        assert not torch.backends.mkldnn.enabled  # the first loop still trains
        # a safe loop nested in it runs as it would alone (another thread's would wait for the
        # unsafe one: tests/test_determinism.py), then the outer loop's setting is back
        with memory_format.training_backend(safe) as nested:
            assert nested and torch.backends.mkldnn.enabled
        assert not torch.backends.mkldnn.enabled
    assert torch.backends.mkldnn.enabled  # forward-only work and safe models get it back


def test_training_runs_an_unsafe_model_without_onednn_and_a_safe_one_with_it(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)
    raw = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    targets = np.arange(32) % 10
    data = ImageData("toy", 10, (1, 8, 8), targets, None, raw=raw)
    cfg = TrainParams(epochs=1, batch_size=16, lr=0.01)
    for name, expected in (("resnet_mini", False), ("smallcnn", True)):
        seen = []
        model = build(name, 10, (1, 8, 8))
        train(
            model,
            data,
            np.arange(32),
            targets,
            cfg,
            on_step=lambda _, __, seen=seen: seen.append(torch.backends.mkldnn.enabled),
        )
        assert seen == [expected, expected], name
    assert torch.backends.mkldnn.enabled
