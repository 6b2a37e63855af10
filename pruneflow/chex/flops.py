"""FLOPs, parameters and CPU latency of dense, masked and extracted models.

FLOPs are what ``torch.utils.flop_counter`` counts for one image (2 per multiply-add, convs
and linears; BN, activations and sums are not counted). A conv's count is linear in its
input and in its output channels, so the FLOPs of any channel allocation follow exactly from
one count of the dense model: :class:`FlopsModel` is that formula, used to calibrate the
allocation to a FLOPs target before anything is extracted, and checked against the counter on
extracted models in the tests.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from pruneflow.chex.groups import ChannelGroup

InShape = tuple[int, int, int]


def module_flops(model: nn.Module, in_shape: InShape) -> dict[str, int]:
    """FLOPs of one image through each Conv2d/Linear of ``model``, by module name.

    The counter's own per-module figures come from process-wide module hooks, which every other
    thread's forward passes fire too (a CHEX item calibrating its widths beside another item's
    training got other counts, and other widths): this thread's running total (the counter's
    dispatch mode is per thread) is read before and after each layer by the model's own hooks.
    """
    from torch.utils.flop_counter import FlopCounterMode  # see count_flops

    leaves = {m: n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    counter = FlopCounterMode(display=False)
    started: dict[nn.Module, int] = {}
    out: dict[str, int] = {}

    def before(module: nn.Module, args: object) -> None:
        started[module] = counter.get_total_flops()

    def after(module: nn.Module, args: object, output: object) -> None:
        name = leaves[module]
        out[name] = out.get(name, 0) + int(counter.get_total_flops() - started.pop(module))

    handles = [m.register_forward_pre_hook(before) for m in leaves]
    handles += [m.register_forward_hook(after) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, *in_shape))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return out


def count_flops(model: nn.Module, in_shape: InShape) -> int:
    """Total FLOPs of one image (batch 1) as torch.utils.flop_counter counts them."""
    # imported here: torch's counter imports triton, a second of CPU at the start of every
    # process that imports the steps, most of which never count FLOPs
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, *in_shape))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class FlopsModel:
    """FLOPs of the model as a function of the channel count of every group.

    For each counted module: ``flops = dense * out_fraction * in_fraction``, where a fraction is
    (positions outside any group + positions per kept channel of each group) / all positions.
    """

    def __init__(self, model: nn.Module, in_shape: InShape, groups: Sequence[ChannelGroup]):
        self.groups = list(groups)
        self.dense_per_module = module_flops(model, in_shape)
        modules = dict(model.named_modules())
        # per module and side (0 out, 1 in): total positions and {group index: positions}
        self._terms: dict[str, list[tuple[int, dict[int, int]]]] = {}
        for name in self.dense_per_module:
            weight = modules[name].weight
            self._terms[name] = [(int(weight.shape[0]), {}), (int(weight.shape[1]), {})]
        for g_index, g in enumerate(self.groups):
            for s in g.slices:
                if s.attr == "weight" and s.module in self._terms:
                    self._terms[s.module][s.dim][1][g_index] = int(s.idx.numel())

    def flops(self, counts: Sequence[int] | Mapping[str, int]) -> float:
        """FLOPs of one image when group ``g`` keeps ``counts[g]`` channels (by index or name)."""
        if isinstance(counts, Mapping):
            counts = [counts[g.name] for g in self.groups]
        total = 0.0
        for name, dense in self.dense_per_module.items():
            factor = 1.0
            for positions, parts in self._terms[name]:
                fixed = positions - sum(parts.values())
                kept = fixed + sum(n * counts[g] / self.groups[g].size for g, n in parts.items())
                factor *= kept / positions
            total += dense * factor
        return total

    def dense(self) -> float:
        return self.flops([g.size for g in self.groups])

    def fits(self, max_flops: float):
        """A budget for :func:`pruneflow.chex.realloc.allocate`: FLOPs at most ``max_flops``."""
        return lambda counts: self.flops(counts) <= max_flops * (1 + 1e-9)


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    in_shape: InShape,
    batch_size: int = 64,
    threads: int = 1,
    repeats: int = 20,
    warmup: int = 3,
) -> float:
    """Median wall time (ms) of one eval-mode forward pass of a ``batch_size`` batch on CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    was_training = model.training
    model.eval()
    x = torch.randn(batch_size, *in_shape, generator=torch.Generator().manual_seed(0))
    try:
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
        model.train(was_training)
    return 1000.0 * statistics.median(times)
