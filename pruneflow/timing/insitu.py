"""In-situ layer timing: every layer timed inside whole-model forward passes.

Each profiled layer's module in a :class:`~pruneflow.timing.runtime.SparseRuntime` is replaced
by a :class:`TimedSlot` that runs whichever executable layer is installed in it and records
how long it took. A *sweep* runs the whole model repeatedly and returns every slot's timing,
the end-to-end time and the time spent outside the slots (the remainder), all from the same
runs.

Why not time each layer alone in a loop: alone, a layer's weights and scratch buffers stay in
cache from one repeat to the next; inside the model the other layers evict them. Measured
alone, mlp1024's dense 1024x1024 layers (4 MiB of weights each) looked 0.4 ms faster in total
than they are in the model, that difference landed in the "remainder", and sparse profiles
(much smaller weights, little eviction) were then over-predicted by 40%. Timing in situ
charges each layer its real cache behaviour and input layout. It is also how the authors'
DeepSparse timings were taken (per-layer times read from whole-model runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.timing.measure import Timing, clock_ns
from pruneflow.timing.runtime import SparseRuntime, set_submodule

__all__ = ["InSitu", "SweepResult", "SweepSettings", "TimedSlot"]


class TimedSlot(nn.Module):
    """Runs the installed executable layer and records each call's duration (ms)."""

    def __init__(self, exe: nn.Module):
        super().__init__()
        self.exe = exe
        self.samples: list[float] = []
        self.clock: Callable[[], int] = time.perf_counter_ns

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0 = self.clock()
        y = self.exe(x)
        self.samples.append((self.clock() - t0) / 1e6)
        return y


@dataclass(frozen=True)
class SweepSettings:
    """Repeats of one sweep: stop when every active layer's median is stable, or at a cap."""

    warmup: int = 1
    min_repeats: int = 5
    max_repeats: int = 30
    rel_tol: float = 0.03
    max_seconds: float = 1.0


@dataclass(frozen=True)
class SweepResult:
    """Per-slot timings (None for a layer given up on), end to end, and outside the slots.

    ``plain_total``: end-to-end runs without the slots, interleaved with the timed runs (only
    when asked for): the model's own time, under the same load as the layer timings. (A
    slot's bookkeeping costs about 2 us a call, and made no measurable difference to
    mlp1024's 5 ms forward pass.)
    """

    layers: dict[str, Timing | None]
    total: Timing
    remainder: Timing
    plain_total: Timing | None = None


def _per_run(samples: Sequence[float], runs: int) -> np.ndarray:
    """A slot's time per forward pass (the sum of its calls, should a model call it twice)."""
    calls = max(len(samples) // max(runs, 1), 1)
    return np.asarray(samples[: calls * runs], dtype=np.float64).reshape(-1, calls).sum(axis=1)


def _stable(samples: Sequence[float], rel_tol: float) -> bool:
    if len(samples) < 3:
        return False
    med = float(np.median(samples))
    return abs(med - float(np.median(samples[:-2]))) <= rel_tol * med


class InSitu:
    """Slots in a runtime's model for the named layers; run sweeps over a fixed input."""

    def __init__(self, rt: SparseRuntime, names: Sequence[str], x: torch.Tensor):
        self.rt, self.x = rt, x
        self.slots: dict[str, TimedSlot] = {}
        for name in names:
            slot = TimedSlot(rt.layer(name))
            set_submodule(rt.net, name, slot)
            self.slots[name] = slot

    def remove(self) -> None:
        """Put the installed executable layers back in place of the slots."""
        for name, slot in self.slots.items():
            set_submodule(self.rt.net, name, slot.exe)
        self.slots = {}

    def installed(self, name: str) -> nn.Module:
        return self.slots[name].exe

    def install(self, name: str, exe: nn.Module) -> None:
        if name not in self.slots:
            raise PruneflowError(f"no timed slot for layer '{name}'")
        self.slots[name].exe = exe

    def _plain_run(self, clock: Callable[[], int]) -> float:
        for name, slot in self.slots.items():
            set_submodule(self.rt.net, name, slot.exe)
        try:
            t0 = clock()
            self.rt(self.x)
            return (clock() - t0) / 1e6
        finally:
            for name, slot in self.slots.items():
                set_submodule(self.rt.net, name, slot)

    def sweep(
        self,
        st: SweepSettings,
        give_up: Mapping[str, tuple[float, nn.Module]] | None = None,
        plain: bool = False,
    ) -> SweepResult:
        """Run the model until the timings settle.

        ``give_up``: layer -> (cap_ms, fallback). After the first timed run, a layer slower
        than ``cap_ms`` gets ``fallback`` installed (so that a hopeless candidate does not slow
        the remaining runs down) and its timing is reported as None. ``plain``: also time
        runs without the slots, alternating with the timed ones.
        """
        clock = clock_ns()
        for slot in self.slots.values():
            slot.clock = clock
        for _ in range(max(st.warmup, 0)):
            self.rt(self.x)
        for slot in self.slots.values():
            slot.samples.clear()
        dropped: set[str] = set()
        totals: list[float] = []
        plains: list[float] = []
        deadline = time.perf_counter_ns() + int(st.max_seconds * 1e9)
        while len(totals) < st.max_repeats:
            t0 = clock()
            self.rt(self.x)
            totals.append((clock() - t0) / 1e6)
            if plain:
                plains.append(self._plain_run(clock))
            if len(totals) == 1 and give_up:
                for name, (cap, fallback) in give_up.items():
                    if sum(self.slots[name].samples) > cap:
                        dropped.add(name)
                        self.install(name, fallback)
            if len(totals) >= st.min_repeats:
                series = [totals, *([plains] if plain else [])] + [
                    _per_run(s.samples, len(totals)).tolist()
                    for n, s in self.slots.items()
                    if n not in dropped
                ]
                if all(_stable(s, st.rel_tol) for s in series):
                    break
                if time.perf_counter_ns() > deadline:
                    break
        runs = len(totals)
        inside = {n: _per_run(s.samples, runs) for n, s in self.slots.items()}
        layers: dict[str, Timing | None] = {
            n: None if n in dropped else Timing.of(v.tolist()) for n, v in inside.items()
        }
        outside = np.asarray(totals) - np.sum(list(inside.values()), axis=0)
        return SweepResult(
            layers,
            Timing.of(totals),
            Timing.of(outside.tolist()),
            Timing.of(plains) if plain else None,
        )
