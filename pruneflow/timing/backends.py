"""Execution backends: how one Conv2d/Linear runs at a given sparsity on a given device.

A backend is anything satisfying :class:`Backend`: a name, the device it runs on, whether it
can run here at all (``available``), whether it can run a given layer (``supports``) and a
``build`` that turns a (BN-folded, masked) ``nn.Conv2d``/``nn.Linear`` plus an optional fused
ReLU into an executable module following the layout contract in
:mod:`pruneflow.timing.layers`. The registry below is the seam for other targets (a GPU host's
kernels, 2:4 semi-structured sparsity, DeepSparse where installed): register an object with
:func:`register_backend` and the profiler and the runtime pick it up by name.

Registered here, all for CPU:

``dense``
    torch's own GEMM / oneDNN convolution; zeros in the weight are just multiplied.
``csr``
    torch sparse CSR weight times the dense operand (``X^T`` for linear, im2col for conv).
``direct_numba``
    convolutions only: the direct sparse convolution of :mod:`pruneflow.timing.direct_conv`
    (no im2col, the NCHW output written by the kernel); zero-padded ``groups=1`` convs with
    stride 1 or 2 and dilation 1. Other convolutions are not supported by it, so the profiler
    times them on the next backends and the table records the one that won.
``csr_numba``
    the register-tiled numba kernel of :mod:`pruneflow.timing.kernels`; 2-8x faster than
    ``csr``; beats ``dense`` from about 40% sparsity on (linear) or 50-70% (3x3 convs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.timing import direct_conv as DC
from pruneflow.timing import layers as L
from pruneflow.timing import numba_layers as NL

__all__ = [
    "Backend",
    "LayerBackend",
    "available_backends",
    "build_layer",
    "get_backend",
    "register_backend",
    "registered_backends",
    "unregister_backend",
]


@runtime_checkable
class Backend(Protocol):
    """What the profiler and the runtime need from a way of executing a layer."""

    name: str
    device: str

    def available(self) -> bool:
        """Whether this backend can run on this host (library installed, device present)."""
        ...

    def supports(self, layer: nn.Module) -> bool:
        """Whether it can run ``layer`` (type, groups, padding mode, ...)."""
        ...

    def build(self, layer: nn.Module, relu: bool = False, pool: bool = False) -> L.ExecLayer:
        """An executable module computing ``layer(x)`` (then ReLU if ``relu``, then a 2x2 max
        pooling if ``pool``: a convolution only)."""
        ...


def _plain_conv(layer: nn.Module) -> bool:
    return (
        isinstance(layer, nn.Conv2d)
        and layer.groups == 1
        and layer.padding_mode == "zeros"
        and not isinstance(layer.padding, str)
    )


def _any_conv(layer: nn.Module) -> bool:
    return (
        isinstance(layer, nn.Conv2d)
        and layer.padding_mode == "zeros"
        and not isinstance(layer.padding, str)
    )


@dataclass(frozen=True)
class LayerBackend:
    """A backend made of one executable class for Linear (``None``: convolutions only) and
    one for Conv2d."""

    name: str
    linear: type[L.ExecLayer] | None
    conv: type[L.ExecLayer]
    device: str = "cpu"
    conv_ok: Callable[[nn.Module], bool] = _plain_conv
    is_available: Callable[[], bool] = lambda: True

    def available(self) -> bool:
        return self.is_available()

    def supports(self, layer: nn.Module) -> bool:
        if isinstance(layer, nn.Linear):
            return self.linear is not None
        return self.conv_ok(layer)

    def build(self, layer: nn.Module, relu: bool = False, pool: bool = False) -> L.ExecLayer:
        if not self.supports(layer):
            raise PruneflowError(
                f"backend '{self.name}' cannot run {layer!r}; use 'dense' for this layer"
            )
        if pool and not isinstance(layer, nn.Conv2d):
            raise PruneflowError(
                f"only a convolution can fuse the max pooling after it, not {layer!r}"
            )
        cls = self.linear if isinstance(layer, nn.Linear) else self.conv
        assert cls is not None  # supports() said so
        return cls(layer, relu, pool) if pool else cls(layer, relu)


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend, *, replace: bool = False) -> None:
    """Add ``backend`` to the registry (``replace=True`` to overwrite one of the same name)."""
    if not isinstance(backend, Backend):
        raise PruneflowError(f"{backend!r} does not implement the Backend protocol")
    if backend.name in _REGISTRY and not replace:
        raise PruneflowError(f"a backend named '{backend.name}' is already registered")
    _REGISTRY[backend.name] = backend


def unregister_backend(name: str) -> None:
    """Remove ``name`` from the registry (a clear error if it is not registered)."""
    if name not in _REGISTRY:
        raise PruneflowError(f"no backend named '{name}' is registered")
    del _REGISTRY[name]


def get_backend(name: str) -> Backend:
    """The registered backend ``name``; a clear error if unknown or unavailable here."""
    if name not in _REGISTRY:
        raise PruneflowError(
            f"unknown backend '{name}'; registered: {', '.join(sorted(_REGISTRY))}"
        )
    backend = _REGISTRY[name]
    if not backend.available():
        raise PruneflowError(f"backend '{name}' is not available on this host")
    return backend


def registered_backends() -> list[str]:
    """Names of every registered backend, available here or not."""
    return list(_REGISTRY)


def available_backends(device: str = "cpu") -> list[str]:
    """Names of the registered backends that run on ``device`` on this host."""
    return [n for n, b in _REGISTRY.items() if b.device == device and b.available()]


def build_layer(name: str, layer: nn.Module, relu: bool = False, pool: bool = False) -> L.ExecLayer:
    """``get_backend(name).build(layer, relu, pool)`` (``pool``: the 2x2 max pooling after a
    convolution, see :mod:`pruneflow.timing.layers`)."""
    backend = get_backend(name)
    return backend.build(layer, relu, pool) if pool else backend.build(layer, relu)


# Order matters to the profiler: it tries sparse backends in this order, and a candidate
# tried later is dropped early where it cannot beat the best so far (fastest first is cheapest).
register_backend(LayerBackend("dense", L.DenseLinear, L.DenseConv, conv_ok=_any_conv))
register_backend(
    LayerBackend("direct_numba", None, DC.DirectSparseConv, conv_ok=DC.direct_supports)
)
register_backend(LayerBackend("csr_numba", NL.NumbaCsrLinear, NL.NumbaCsrConv))
register_backend(LayerBackend("csr", L.TorchCsrLinear, L.TorchCsrConv))
