"""Channels-last execution: same outputs, the caller's layout restored, a search's model kept."""

import numpy as np
import torch

from pruneflow import memory_format
from pruneflow.data.datasets import ImageData
from pruneflow.models import build
from pruneflow.train import evaluate


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


def test_training_turns_onednn_off_on_a_host_without_avx512_while_any_loop_trains(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)  # restored after the test
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    with memory_format.training_backend() as onednn:
        assert onednn and torch.backends.mkldnn.enabled
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not memory_format.onednn_trains_safely()
    with memory_format.training_backend() as first:
        assert not first and not torch.backends.mkldnn.enabled
        with memory_format.training_backend() as second:  # a concurrent fan-out item
            assert not second
        assert not torch.backends.mkldnn.enabled  # the first loop still trains
    assert torch.backends.mkldnn.enabled  # forward-only work gets it back
