"""Process-wide numeric settings that every entry point applies the same way."""

from __future__ import annotations

import sys

import torch


def configure(threads: int, flush_denormal: bool = True) -> None:
    """Fix torch's thread count and denormal handling for reproducible, fast CPU runs.

    Denormal floats are very slow on this class of CPU: flushing them made 100 epochs of a
    small MLP 6x faster here, and it does not change accuracy in any way we can measure.
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
