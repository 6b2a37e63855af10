"""How long parts of a step took, kept out of the step's outputs.

The same params must give the same bytes (a cache key follows the outputs' hashes, and a
recomputed upstream file whose bytes did not change must not re-run everything downstream), so
no output carries a wall-clock figure. Code that times a part of its work (dense training, one
layer's solve) reports it here with :func:`note` or :func:`timed`; the step that runs it
(:meth:`pruneflow.steps.base.Step.run`) collects the figures into the ``timings`` of its step
record (``.pruneflow/stepcache/<step>-<fingerprint>/record.json``), beside ``step`` (the whole
compute), and the run log (``.pruneflow/runs/last.json``) carries them on. Outside a step the
figures go nowhere.

What a step *measures* as its product (a timing table's per-layer milliseconds, the measured
speedup of a pruned model) is an output, not a timing of the run, and does not come here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

Timings = dict[str, float]

_collector: ContextVar[Timings | None] = ContextVar("pruneflow_wallclock", default=None)


@contextlib.contextmanager
def collecting() -> Iterator[Timings]:
    """Gather what :func:`note` reports in this thread while the block runs (nested blocks
    each gather their own)."""
    timings: Timings = {}
    token = _collector.set(timings)
    try:
        yield timings
    finally:
        _collector.reset(token)


def note(name: str, seconds: float) -> None:
    """Add ``seconds`` under ``name`` to the running step's timings (summed if repeated)."""
    timings = _collector.get()
    if timings is not None:
        timings[name] = round(timings.get(name, 0.0) + float(seconds), 3)


@contextlib.contextmanager
def timed(name: str) -> Iterator[None]:
    """Note the block's wall-clock seconds under ``name``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        note(name, time.perf_counter() - started)
