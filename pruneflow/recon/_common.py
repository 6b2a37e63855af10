"""Small helpers the recon modules share: exact fp32 on CUDA, progress bars (and the device
choice, :func:`pruneflow.runtime.resolve_device`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pruneflow.runtime import progress_enabled


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Turn TF32 off for the duration: the same numbers on CPU and CUDA up to fp32 rounding.

    cuDNN convolutions default to TF32 (10-bit mantissa) on Ampere and later, which would make
    CUDA Hessians differ from CPU ones by ~1e-3 relative; OBC disables it for the same reason.
    """
    if not torch.cuda.is_available():
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def make_progress(progress: bool | str) -> Progress:
    """A transient rich progress bar; ``progress`` is True/False or 'auto' (only on a terminal)."""
    if isinstance(progress, str):
        enabled = progress_enabled(progress)
    else:
        enabled = bool(progress)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=True,
    )


@contextlib.contextmanager
def single_thread(device: torch.device) -> Iterator[None]:
    """One CPU thread for loops of many tiny ops, where a second thread only adds sync cost.

    On a shared machine the difference is large: a waiting OpenMP barrier per op made the OBS
    step loop 5-10x slower with 2 threads than with 1 under load.
    """
    if device.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)
