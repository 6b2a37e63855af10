"""Channels-last execution for convolutional models on the CPU.

oneDNN's convolutions run about 1.4x faster on NHWC tensors than on PyTorch's default NCHW on
x86 CPUs (smallcnn, 1,024 calibration images: 1.79 s vs 2.45 s of CPU time), so the
loops that only run a model forward (evaluation, SPDY's candidate scoring) switch conv models to
channels-last. Outputs are the same function of the same weights; only the summation order
inside a convolution may change, so results stay deterministic run to run.

Checkpoints are always written from contiguous (NCHW) weights: :func:`channels_last` restores
the model's layout when it exits.

Training keeps oneDNN except for models that contain a convolution oneDNN gets wrong
(:func:`training_backend`): its 1x1 weight-gradient kernels write past their workspace for a
strided 1x1 convolution whose input is channels-last with fewer input channels per group than
the kernel's channel block, 8 on AVX2 and 16 on AVX-512 (uxlfoundation/oneDNN#6035; the
oneDNN of torch 2.13). Which symptom shows depends on the CPU: wrong weight gradients with no
error (``Conv2d(7, 16, 1, stride=2)`` on AVX2: every step), glibc aborting on a
corrupted heap (the CHEX tests' sub-models: ``jit_1x1:avx2`` on a 4-channel NHWC input at 8x8),
a segfault or a hang. NCHW inputs take oneDNN's blocked path, which is not affected, but the
rule looks at the layers only, whatever the layout, to stay on the safe side. Without oneDNN
such a model trains on torch's slower native kernels (20 steps at batch 128: resnet_mini 3x).
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


# the widest channel block of oneDNN's 1x1 weight-gradient kernels (AVX-512; AVX2's is 8)
ONEDNN_CHANNEL_BLOCK = 16


def onednn_unsafe_convs(model: nn.Module) -> list[str]:
    """The layers of ``model`` whose weight gradients oneDNN may compute wrongly or corrupt
    memory for: strided 1x1 convolutions with fewer than :data:`ONEDNN_CHANNEL_BLOCK` input
    channels per group (see the module's docstring)."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd)
        and all(k == 1 for k in m.kernel_size)
        and any(s > 1 for s in m.stride)
        and m.in_channels // m.groups < ONEDNN_CHANNEL_BLOCK
    ]


def onednn_trains_safely(model: nn.Module) -> bool:
    return not onednn_unsafe_convs(model)


_training_lock = threading.Lock()
_unsafe_loops = 0  # loops inside training_backend() with an unsafe model, over all threads
_onednn_before: bool | None = None


@contextlib.contextmanager
def training_backend(model: nn.Module) -> Iterator[bool]:
    """Gradients of ``model`` flow inside. Where oneDNN does not train ``model`` safely
    (:func:`onednn_trains_safely`), oneDNN is off while any such loop of the process is
    inside (fan-out items train on threads of one process, and the flag is process-wide), and
    back on when the last one leaves. Yields whether oneDNN is on as the loop starts, so
    callers use channels-last only then; a safe loop that overlaps an unsafe one runs the
    overlap on native kernels, which is slower but correct."""
    global _unsafe_loops, _onednn_before
    if onednn_trains_safely(model):
        yield bool(torch.backends.mkldnn.enabled)
        return
    with _training_lock:
        if _unsafe_loops == 0:
            _onednn_before = bool(torch.backends.mkldnn.enabled)
            torch.backends.mkldnn.enabled = False
        _unsafe_loops += 1
    try:
        yield False
    finally:
        with _training_lock:
            _unsafe_loops -= 1
            if _unsafe_loops == 0:
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
