"""Channels-last execution for convolutional models on the CPU.

oneDNN's convolutions run about 1.4x faster on NHWC tensors than on PyTorch's default NCHW on
this project's CPUs (smallcnn, 1,024 calibration images: 1.79 s vs 2.45 s of CPU time), so the
loops that only run a model forward (evaluation, SPDY's candidate scoring) switch conv models to
channels-last. Outputs are the same function of the same weights; only the summation order
inside a convolution may change, so results stay deterministic run to run.

Checkpoints are always written from contiguous (NCHW) weights: :func:`channels_last` restores
the model's layout when it exits.

Training on a host without AVX-512 runs without oneDNN (:func:`training_backend`): there,
torch 2.13's oneDNN convolutions corrupt the heap while training (glibc aborts with "corrupted
double-linked list"), e.g. ``Conv2d(4, 9, 1, stride=2)`` on 8x8 NHWC inputs within 30 steps,
and the CHEX tests' resnet_mini on 8x8 digits even in NCHW; with oneDNN off the same runs pass
under glibc's malloc checks. The native kernels are slower (20 steps at batch 128: smallcnn
1.35x, resnet_mini 3x), and forward-only loops keep oneDNN and channels-last.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import nn


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def as_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last layout when it is a batch of images [n, c, h, w]."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def is_channels_last(model: nn.Module) -> bool:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return bool(convs) and all(
        m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs
    )


def onednn_trains_safely() -> bool:
    """Whether oneDNN may run training here: torch's CPU kernels use AVX-512."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


_training_lock = threading.Lock()
_training_loops = 0  # loops inside training_backend(), over all threads
_onednn_before: bool | None = None


@contextlib.contextmanager
def training_backend() -> Iterator[bool]:
    """A training loop runs inside: where oneDNN does not train safely
    (:func:`onednn_trains_safely`) it is off while any loop of the process is inside (fan-out
    items train on threads of one process, and the flag is process-wide), and back on when the
    last one leaves, for forward-only work. Yields whether oneDNN is on for this loop, so
    callers use channels-last only then."""
    global _training_loops, _onednn_before
    if onednn_trains_safely():
        yield bool(torch.backends.mkldnn.enabled)
        return
    with _training_lock:
        if _training_loops == 0:
            _onednn_before = bool(torch.backends.mkldnn.enabled)
            torch.backends.mkldnn.enabled = False
        _training_loops += 1
    try:
        yield False
    finally:
        with _training_lock:
            _training_loops -= 1
            if _training_loops == 0:
                torch.backends.mkldnn.enabled = bool(_onednn_before)


def convert(model: nn.Module) -> bool:
    """Switch a conv model's weights to channels-last in place; False (untouched) otherwise."""
    if not has_conv2d(model):
        return False
    model.to(memory_format=torch.channels_last)
    return True


@contextlib.contextmanager
def channels_last(model: nn.Module) -> Iterator[bool]:
    """Run ``model`` channels-last inside the block (when it has convolutions), then restore
    the contiguous weights it had. A model already channels-last (a search's scoring model)
    stays so. Yields whether the model runs channels-last, so callers convert inputs then."""
    already = is_channels_last(model)
    converted = already or convert(model)
    try:
        yield converted
    finally:
        if converted and not already:
            model.to(memory_format=torch.contiguous_format)
