"""Timing runs: fixed thread counts, warm-up, repeat until the median settles.

CPU timings on a shared host are noisy and skewed (a run is only ever slowed down), so every
figure is a median with its 10th/90th percentiles, and a measurement stops as soon as more
runs no longer move the median (or at a cap). Python's garbage collector is paused while
timing so that a collection does not land inside a run.

Which clock. When other processes compete for the cores, the scheduler takes a core away for
whole time slices (milliseconds): a 5 ms forward pass then reads 9 ms while a 1 ms layer
mostly fits between two slices, which biases long runs against short ones and breaks "the
model is the sum of its layers" on a busy host. With one thread, all the work runs on the
calling thread (torch, oneDNN/MKL and numba's thread pool run single-threaded regions
inline), so its **thread CPU time** is the run's duration without the time it spent
descheduled; on a quiet host it equals the wall time. With more threads the workers' time is
not visible from the caller, so the **wall clock** is used (and busy hosts distort it).
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numba
import numpy as np
import torch

from pruneflow.errors import PruneflowError

__all__ = [
    "Timing",
    "clock_ns",
    "measure",
    "measure_interleaved",
    "measure_speedups",
    "thread_scope",
    "timed_call",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    """Summary of repeated runs, in milliseconds; ``samples_ms``: the runs themselves (empty
    for a summary made from figures alone)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    samples_ms: tuple[float, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Timing:
        if len(samples_ms) == 0:
            raise PruneflowError("no timing samples to summarize")
        a = np.asarray(samples_ms, dtype=np.float64)
        p10, med, p90 = np.percentile(a, [10, 50, 90])
        return cls(float(med), float(p10), float(p90), int(a.size), tuple(a.tolist()))

    @classmethod
    def pooled(cls, timings: Sequence[Timing]) -> Timing:
        """All runs of several timings as one (each without samples counts by its median)."""
        runs = [v for t in timings for v in (t.samples_ms or (t.median_ms,))]
        return cls.of(runs)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of the runs (the median where only the summary is known)."""
        if not self.samples_ms:
            return self.median_ms
        return float(np.quantile(np.asarray(self.samples_ms), q))


@contextlib.contextmanager
def thread_scope(threads: int) -> Iterator[None]:
    """Run torch (intra-op) and numba kernels on ``threads`` threads; restore on exit."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise PruneflowError(f"threads must be an integer >= 1, got {threads!r}")
    limit = int(numba.config.NUMBA_NUM_THREADS)
    if threads > limit:
        raise PruneflowError(
            f"threads={threads} exceeds numba's pool of {limit} threads "
            "(set NUMBA_NUM_THREADS before starting Python to allow more)"
        )
    old_torch, old_numba = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old_torch)
        numba.set_num_threads(old_numba)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def clock_ns() -> Callable[[], int]:
    """The clock for the current thread settings: thread CPU time if single-threaded."""
    single = torch.get_num_threads() == 1 and numba.get_num_threads() == 1
    return time.thread_time_ns if single else time.perf_counter_ns


def timed_call(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """``fn(*args)`` and its duration in ms on :func:`clock_ns`."""
    clock = clock_ns()
    t0 = clock()
    out = fn(*args)
    return out, (clock() - t0) / 1e6


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    min_repeats: int = 5,
    max_repeats: int = 50,
    rel_tol: float = 0.02,
    max_seconds: float = 1.0,
    give_up_above_ms: float | None = None,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed runs, then repeats until the median is stable.

    Stable: after ``min_repeats`` runs, the median differs by at most ``rel_tol`` (relative)
    from the median without the last two runs. Stops at ``max_repeats`` runs or after
    ``max_seconds`` (wall clock) of timed runs. ``give_up_above_ms``: stop after the first
    timed run if it is slower than that: a candidate that cannot win is not worth a stable
    median.
    """
    if min_repeats < 1 or max_repeats < min_repeats:
        raise PruneflowError(
            f"need 1 <= min_repeats <= max_repeats, got {min_repeats}, {max_repeats}"
        )
    clock = clock_ns()
    samples: list[float] = []
    with _gc_paused():
        for _ in range(max(warmup, 0)):
            fn()
        deadline = time.perf_counter_ns() + int(max_seconds * 1e9)
        while len(samples) < max_repeats:
            t0 = clock()
            fn()
            samples.append((clock() - t0) / 1e6)
            if give_up_above_ms is not None and len(samples) == 1:
                if samples[0] > give_up_above_ms:
                    break
            if len(samples) >= min_repeats:
                if time.perf_counter_ns() > deadline:
                    break
                if len(samples) >= 3:
                    med = float(np.median(samples))
                    if abs(med - float(np.median(samples[:-2]))) <= rel_tol * med:
                        break
    return Timing.of(samples)


def measure_interleaved(
    fns: Sequence[Callable[[], object]], *, warmup: int = 2, repeats: int = 20, block: int = 5
) -> list[Timing]:
    """Time several functions round-robin, so that load changes on the host hit all alike.

    Each round runs every function ``block`` times in a row and times all but the first: a
    single run right after another model's would start with that model's data in cache,
    which is neither how a model is served nor how the profiler times it.
    """
    clock = clock_ns()
    samples: list[list[float]] = [[] for _ in fns]
    with _gc_paused():
        for fn in fns:
            for _ in range(warmup):
                fn()
        while any(len(s) < repeats for s in samples):
            for i, fn in enumerate(fns):
                fn()
                for _ in range(max(block - 1, 1)):
                    t0 = clock()
                    fn()
                    samples[i].append((clock() - t0) / 1e6)
    return [Timing.of(s) for s in samples]


def measure_speedups(
    reference: Callable[[], object],
    candidates: Sequence[Callable[[], object]],
    *,
    repeats: int = 100,
    passes: int = 5,
    warmup: int = 3,
    min_block_seconds: float = 0.0,
    quantile: float = 0.5,
) -> list[float]:
    """Speedup of every candidate over ``reference``, each measured across the whole call.

    ``repeats`` timed runs of each candidate (and as many of the reference beside it), split
    over ``passes`` passes over the candidates. In a pass, each candidate in turn: the
    reference, then the candidate, each ``warmup`` untimed runs and then its share of timed
    runs in a row, as a model runs when it is served (switching models after every few runs
    made both slower, the smaller one relatively more: 2.15x in blocks of 2 against 2.41x in
    blocks of 20 for the same smallcnn profile).

    Why passes: on a shared host the ratio of two models' times drifts with the load (sparse
    kernels suffer more from other tenants' cache and memory traffic than dense GEMM: one fixed
    smallcnn profile read 1.29x to 1.47x in 3-second windows a few seconds apart), so a
    candidate timed in one window gets that window's ratio. Spread over passes, each
    candidate's speedup is the ratio of the ``quantile`` of all its reference's samples to
    that of its own (the median by default; the timing table's statistic for a comparison with
    the table's prediction, :mod:`pruneflow.timing.profiler`).

    ``min_block_seconds``: a block runs at least this long (more runs than its share of
    ``repeats`` for a fast model, sized from the first pass's warm-up runs). mlp1024 runs in
    1-3 ms, so 20 runs were a 20-60 ms snapshot of a host whose speed swings by 7% between
    half-second windows: one profile's three seeds measured 0.86x to 0.98x of its target.
    """
    if passes < 1 or repeats < passes:
        raise PruneflowError(f"need 1 <= passes <= repeats, got passes={passes}, {repeats=}")
    if not 0.0 < quantile < 1.0:
        raise PruneflowError(f"quantile must be in (0, 1), got {quantile}")
    per_pass = -(-repeats // passes)
    clock = clock_ns()
    block: dict[int, int] = {}  # id(fn) -> timed runs per block

    def run(fn: Callable[[], object]) -> list[float]:
        warm = []
        for _ in range(warmup):
            t0 = clock()
            fn()
            warm.append((clock() - t0) / 1e9)
        if id(fn) not in block:
            once = float(np.median(warm)) if warm else 0.0
            block[id(fn)] = max(per_pass, math.ceil(min_block_seconds / once) if once > 0 else 0)
        out = []
        for _ in range(block[id(fn)]):
            t0 = clock()
            fn()
            out.append((clock() - t0) / 1e6)
        return out

    ref: list[list[float]] = [[] for _ in candidates]
    cand: list[list[float]] = [[] for _ in candidates]
    with _gc_paused():
        for _ in range(passes):
            for i, fn in enumerate(candidates):
                ref[i] += run(reference)
                cand[i] += run(fn)
    return [
        float(np.quantile(r, quantile) / np.quantile(c, quantile))
        for r, c in zip(ref, cand, strict=True)
    ]
