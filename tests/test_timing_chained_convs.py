"""A direct convolution writes its output straight into the zero-padded operand of the direct
convolution that alone reads it: outputs equal the masked model's on every path (pooled or
not, padding of every shape, consumers that take no such buffer), the padding stays zero from
call to call, and a consumer swapped for another backend (as the profiler does) gets a plain
output."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneflow.timing import SparseRuntime, build_layer, thread_scope
from pruneflow.timing.insitu import TimedSlot
from pruneflow.timing.runtime import set_submodule


def _pruned(model: nn.Module, sparsity: float, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                mod.weight.mul_(torch.rand(mod.weight.shape, generator=gen) >= sparsity)
                if mod.bias is not None:
                    mod.bias.normal_(generator=gen)
    return model.eval()


def _chain(second: dict, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()]
    layers += [nn.MaxPool2d(2)] if pool else []
    layers += [nn.Conv2d(6, 5, **second), nn.ReLU(), nn.Conv2d(5, 4, 3, padding=1)]
    return nn.Sequential(*layers)


SECONDS = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, padding=(1, 0)),  # no column padding: rows of the operand touch
    dict(kernel_size=(1, 3), padding=(0, 2)),
    dict(kernel_size=3, padding=1, stride=2),  # a phase-split operand: no buffer offered
    dict(kernel_size=1),  # no padding: reads its input as it is
]


@pytest.mark.parametrize("second", SECONDS, ids=lambda s: str(sorted(s.items())))
@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("hw", [(13, 11), (8, 8)])
def test_chained_convolutions_equal_the_masked_model(second: dict, pool: bool, hw: tuple) -> None:
    model = _pruned(_chain(second, pool), 0.6)
    rt = SparseRuntime(model, "direct_numba")
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert rt.layer(names[0]).next_layer == (rt.net, names[1])
    assert rt.layer(names[1]).next_layer == (rt.net, names[2])
    assert rt.layer(names[2]).next_layer is None  # the model's output
    with torch.no_grad():
        for seed in (1, 2):  # a second input: the padding written around the first stays zero
            x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(seed))
            torch.testing.assert_close(rt(x), model(x), rtol=1e-5, atol=1e-5)


def test_producer_writes_into_the_consumer_operand() -> None:
    model = _pruned(_chain(dict(kernel_size=3, padding=1), pool=True), 0.5)
    rt = SparseRuntime(model, "direct_numba")
    first, second = rt.layer("0"), rt.layer("3")
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        y = first(x)
        view, _ = second.input_buffer(2, 5, 5)
        assert y.data_ptr() == view.data_ptr() and not y.is_contiguous()
        torch.testing.assert_close(y, torch.max_pool2d(torch.relu(model[0](x)), 2))
        torch.testing.assert_close(second(y), torch.relu(model[3](y.contiguous())))


@pytest.mark.parametrize("swap", ["dense", "csr_numba", "slot"])
def test_a_consumer_swapped_like_the_profiler_does(swap: str) -> None:
    """The producer looks at the consumer installed at call time: another backend gets a
    plain output; a timing slot holding a direct convolution gets its operand written."""
    model = _pruned(_chain(dict(kernel_size=3, padding=1), pool=False), 0.5)
    rt = SparseRuntime(model, "direct_numba")
    second = rt.layer("2")
    if swap == "slot":
        set_submodule(rt.net, "2", TimedSlot(second))
    else:
        set_submodule(rt.net, "2", build_layer(swap, model[2], relu=True))
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        y = rt.layer("0")(x)
        assert y.is_contiguous() == (swap != "slot")
        torch.testing.assert_close(rt(x), model(x), rtol=1e-5, atol=1e-5)


def test_no_chain_where_the_output_has_another_reader() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(4, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            return self.b(y) + y

    model = _pruned(Residual(), 0.5)
    rt = SparseRuntime(model, "direct_numba")
    assert rt.layer("a").next_layer is None
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(rt(x), model(x), rtol=1e-5, atol=1e-5)


def test_chained_on_two_threads_equals_one() -> None:
    model = nn.Sequential(
        nn.Conv2d(32, 48, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(48, 48, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(48, 16, 3, padding=1),
    )
    model = _pruned(model, 0.5)
    rt = SparseRuntime(model, "direct_numba")
    x = torch.randn(4, 32, 28, 26)
    with torch.no_grad():
        ref = model(x)
        with thread_scope(2):
            y2 = rt(x)
        with thread_scope(1):
            y1 = rt(x)
    torch.testing.assert_close(y2, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y1, ref, rtol=1e-4, atol=1e-5)
