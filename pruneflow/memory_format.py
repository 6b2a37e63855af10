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
such a model trains on torch's slower native kernels (about 2-3x slower per step).
:class:`SubsampledPointwiseConv2d` computes a strided 1x1 convolution as a subsampling followed
by a unit-stride one, the same function that never reaches that kernel; the zoo's ``resnet_mini``
uses it for its projection shortcuts, so it and its CHEX sub-models train on oneDNN.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F
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


class SubsampledPointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution with stride ``s`` and no padding, computed as ``x[:, :, ::s, ::s]``
    followed by a unit-stride 1x1 convolution: the same output (both pick the pixels
    ``0, s, 2s, ...``), the same parameters and state dict as ``nn.Conv2d``, and no strided 1x1
    kernel for oneDNN to get wrong (:func:`onednn_unsafe_convs` lets it train)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, bias: bool = False):
        super().__init__(in_channels, out_channels, 1, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self.stride
        return F.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias, 1, 0, 1, self.groups)


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
        and not isinstance(m, SubsampledPointwiseConv2d)
        and all(k == 1 for k in m.kernel_size)
        and any(s > 1 for s in m.stride)
        and m.in_channels // m.groups < ONEDNN_CHANNEL_BLOCK
    ]


def onednn_trains_safely(model: nn.Module) -> bool:
    return not onednn_unsafe_convs(model)


class _OnednnGate:
    """Which oneDNN setting the process's convolutions run under, one setting at a time.

    ``torch.backends.mkldnn.enabled`` is process-wide, and oneDNN's convolutions sum in another
    order than torch's native ones: a step whose evaluation ran while another thread trained a
    model oneDNN cannot train (:func:`training_backend`) got slightly different losses, and the
    results of the thread runner depended on which items overlapped (the CHEX comparison's
    items, 7th digit of the test loss). So conv work holds the setting it runs under (a
    *mode*): threads in one mode run side by side, a thread that needs the other mode waits
    until the current one has no holder left (and, for fairness, new holders of the current
    mode wait behind it). A thread asking for another mode gives up its own first, so it never
    waits while holding one; a block nested in another of its thread's modes switches for its
    duration. Mode ``None``: the block runs no convolution and holds nothing.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._mode: bool | None = None
        self._holders = 0
        self._waiting = {True: 0, False: 0}
        self._turn: bool | None = None  # the mode that enters next when both wait
        self._local = threading.local()
        self._default: bool | None = None

    def default(self) -> bool:
        """oneDNN as the process has it outside any mode (torch's flag when first asked)."""
        with self._cond:
            if self._default is None:
                self._default = bool(torch.backends.mkldnn.enabled)
            return self._default

    def _may_enter(self, mode: bool) -> bool:
        if self._holders == 0:
            return self._turn is None or self._turn is mode
        return self._mode is mode and self._waiting[not mode] == 0

    def _acquire(self, mode: bool) -> None:
        with self._cond:
            self._waiting[mode] += 1
            while not self._may_enter(mode):
                self._cond.wait()
            self._waiting[mode] -= 1
            if self._holders == 0:
                self._mode, self._turn = mode, None
                torch.backends.mkldnn.enabled = mode
            self._holders += 1

    def _release(self, mode: bool) -> None:
        with self._cond:
            self._holders -= 1
            if self._holders == 0:
                self._mode = None
                torch.backends.mkldnn.enabled = self.default()
                # the other mode's waiters go next: a loop leaving and at once re-entering
                # its mode must not keep them out forever
                self._turn = (not mode) if self._waiting[not mode] else None
            self._cond.notify_all()

    @contextlib.contextmanager
    def hold(self, mode: bool | None) -> Iterator[None]:
        self.default()
        stack: list[bool | None] = self._local.__dict__.setdefault("stack", [])
        outer = stack[-1] if stack else None
        if mode is not outer:
            if outer is not None:
                self._release(outer)
            if mode is not None:
                self._acquire(mode)
        stack.append(mode)
        try:
            yield
        finally:
            stack.pop()
            if mode is not outer:
                if mode is not None:
                    self._release(mode)
                if outer is not None:
                    self._acquire(outer)


_GATE = _OnednnGate()


def onednn_scope(enabled: bool | None) -> contextlib.AbstractContextManager[None]:
    """Run the block with oneDNN ``enabled`` (True, False), held against other threads (see
    :class:`_OnednnGate`); None: the block runs no convolution and holds no mode."""
    return _GATE.hold(enabled)


def default_scope() -> contextlib.AbstractContextManager[None]:
    """The mode a step's work runs in unless a loop inside needs another: oneDNN as the
    process has it. A step holds it (:meth:`pruneflow.steps.base.Step.run`), so its
    forward-only conv work never runs under another thread's setting."""
    return _GATE.hold(_GATE.default())


@contextlib.contextmanager
def training_backend(model: nn.Module) -> Iterator[bool]:
    """Gradients of ``model`` flow inside. Where oneDNN does not train ``model`` safely
    (:func:`onednn_trains_safely`), oneDNN is off inside; a conv model that trains safely keeps
    the process's setting; a model without convolutions holds no mode (the setting changes
    nothing for it). Process-wide, each setting is held while a loop runs (fan-out items train on
    threads of one process, and the flag is process-wide: :class:`_OnednnGate`), so a loop's
    numbers never depend on what other threads run. Yields whether oneDNN is on as the loop
    starts, so callers use channels-last only then."""
    if not has_conv2d(model):
        mode = None
    else:
        mode = _GATE.default() and onednn_trains_safely(model)
    with _GATE.hold(mode):
        yield bool(torch.backends.mkldnn.enabled) if mode is None else mode


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
