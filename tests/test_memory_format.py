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


def _unsafe_model(size: int = 8) -> torch.nn.Module:
    """A block with a strided 1x1 projection on 8 input channels (resnet_mini's shape before
    its shortcut became a :class:`memory_format.SubsampledPointwiseConv2d`)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 1, stride=2),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * ((size + 1) // 2) ** 2, 10),
    )


def test_the_unsafe_layers_are_the_strided_1x1_convolutions_with_few_input_channels():
    assert memory_format.onednn_unsafe_convs(_unsafe_model()) == ["2"]
    for safe in ("smallcnn", "resnet18_cifar", "mlp1024", "resnet_mini"):
        assert memory_format.onednn_trains_safely(build(safe, 10, (3, 32, 32)))
    layers = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 1),  # stride 1: no reduce-to-unit-stride workspace
        torch.nn.Conv2d(8, 8, 3, stride=2),  # not 1x1
        torch.nn.Conv2d(32, 32, 1, stride=2, groups=4),  # 8 input channels per group
        torch.nn.Conv1d(4, 8, 1, stride=2),
        memory_format.SubsampledPointwiseConv2d(4, 8, stride=2),  # never a strided kernel
    )
    assert memory_format.onednn_unsafe_convs(layers) == ["2", "3"]


def test_a_subsampled_pointwise_conv_is_the_strided_1x1_convolution():
    torch.manual_seed(0)
    for stride, size in ((2, 8), (2, 7), (3, 10)):
        strided = torch.nn.Conv2d(6, 5, 1, stride=stride, bias=True)
        sub = memory_format.SubsampledPointwiseConv2d(6, 5, stride=stride, bias=True)
        sub.load_state_dict(strided.state_dict())  # the same parameters and keys
        x = torch.randn(3, 6, size, size)
        torch.testing.assert_close(sub(x), strided(x))


def test_onednn_trains_resnet_mini_with_the_native_kernels_gradients(monkeypatch):
    """resnet_mini's projection shortcuts (8 and 16 input channels, stride 2) on channels-last
    inputs: oneDNN's weight gradients equal torch's native ones layer by layer."""
    torch.manual_seed(0)
    model = build("resnet_mini", 10, (1, 16, 16))
    assert memory_format.onednn_trains_safely(model)
    x, y = torch.randn(64, 1, 16, 16), torch.randint(0, 10, (64,))
    grads = {}
    for onednn in (False, True):
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", onednn)
        model.zero_grad(set_to_none=True)
        with memory_format.channels_last(model):
            out = model(memory_format.as_channels_last(x))
            torch.nn.functional.cross_entropy(out, y).backward()
        grads[onednn] = {n: p.grad.contiguous().clone() for n, p in model.named_parameters()}
    for name, reference in grads[False].items():
        error = (grads[True][name] - reference).norm() / reference.norm()
        assert error < 1e-4, (name, error)


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
    safe, unsafe = build("smallcnn", 10, (1, 8, 8)), _unsafe_model()
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
    for name, expected in (("unsafe", False), ("resnet_mini", True), ("smallcnn", True)):
        seen = []
        model = _unsafe_model() if name == "unsafe" else build(name, 10, (1, 8, 8))
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
