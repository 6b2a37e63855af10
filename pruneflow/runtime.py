"""Process-wide numeric settings that every entry point applies the same way."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch

from pruneflow.errors import PruneflowError

# (what runs, units done, units in all): the long loops report through this, without knowing
# who listens (tasks/ turns it into a Prefect progress artifact; the core imports no Prefect)
ProgressListener = Callable[[str, int, int], None]
# a context variable, not a global: concurrent tasks on a thread pool each hear their own loops
_listener: ContextVar[ProgressListener | None] = ContextVar("pruneflow_progress", default=None)
# where the step running in this context trains and evaluates (``runtime.device``)
_device: ContextVar[torch.device | None] = ContextVar("pruneflow_device", default=None)


def configure(threads: int, flush_denormal: bool = True) -> None:
    """Fix torch's thread count and denormal handling for reproducible, fast CPU runs.

    Denormal floats are very slow on many x86 CPUs: flushing them made 100 epochs of a small
    MLP 6x faster on two x86 cores, and it does not change accuracy in any way we can measure.
    """
    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)


def progress_enabled(mode: str) -> bool:
    """'auto' shows progress bars only when stderr is a terminal (quiet in CI, DVC and logs)."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    return sys.stderr.isatty()


@contextlib.contextmanager
def progress_listener(listener: ProgressListener) -> Iterator[None]:
    """Send every :func:`report_progress` of the code run inside to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def report_progress(description: str, done: int, total: int) -> None:
    """One more unit of a long loop finished; a no-op unless someone listens."""
    listener = _listener.get()
    if listener is not None and total > 0:
        listener(description, done, total)


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is a user error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise PruneflowError(f"unknown device '{name}'; use 'auto', 'cpu' or 'cuda'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PruneflowError(
            f"device '{name}' was asked for (runtime.device) but CUDA is not available on this "
            "host; use 'auto' to fall back to the CPU"
        )
    if dev.type not in ("cpu", "cuda"):
        raise PruneflowError(f"device '{name}' is not supported; use 'auto', 'cpu' or 'cuda'")
    return dev


@contextlib.contextmanager
def device_scope(device: str | torch.device) -> Iterator[torch.device]:
    """Train, evaluate and score on ``device`` inside the block (a step sets its
    ``runtime.device`` here; the loops read :func:`current_device`)."""
    token = _device.set(resolve_device(device))
    try:
        yield current_device()
    finally:
        _device.reset(token)


def current_device() -> torch.device:
    """The device of the step running in this context; the CPU outside any step."""
    return _device.get() or torch.device("cpu")
