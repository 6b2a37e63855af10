"""SparseRuntime: a pruned model as an inference model whose layers run on chosen backends.

Pruned means zeros in the weights: from explicit ``masks``, from ``torch.nn.utils.prune``
reparametrisations (``weight_orig * weight_mask``) or already written into the weights.
The conversion, on a copy (the given model is not touched):

1. masks are multiplied in, the model is put in eval mode;
2. the model is traced with ``torch.fx``; every BatchNorm directly after a Conv2d/Linear whose
   output feeds nothing else is **folded** into that layer's weight and bias (zeros stay
   zero), and a ReLU that is a layer's only consumer is **fused** into the layer (the
   ``csr_numba`` kernel applies it in registers). This is what inference engines such as
   DeepSparse do too, and it makes "layer time" mean conv+BN+ReLU as one unit;
3. a 2x2 ``MaxPool2d`` (stride 2, no padding) that is a convolution's only consumer is
   **fused** into it as well (the ``direct_numba`` kernel pools in its store and writes a
   quarter of the output; other backends pool after the layer), so the layer's unit becomes
   conv+BN+ReLU+pool, in the timing table as in the runtime; every other 2x2 max-pooling runs
   as element-wise maxima (:mod:`pruneflow.timing.ops`; torch's NCHW ``max_pool2d`` is 10x
   slower on one thread and would dominate the fixed remainder);
4. every Conv2d/Linear becomes the executable module of its backend
   (:mod:`pruneflow.timing.layers`); linear layers feeding only linear layers hand over
   their output feature-major (no transpose between two sparse linear layers).

Models that ``torch.fx`` cannot trace are still converted, module by module, without folding
or fusion (BN then runs as its own op). Inference only: ``forward`` runs under ``no_grad``
and the result does not train.

A model the runtime cannot take apart runs **whole** on torch with its masks baked in
(:data:`WHOLE_MODEL`): a forward that reads a layer's parameters directly (``F.conv2d(x,
self.conv.weight)``), so that replacing the layer's module would change nothing or break it;
a converted model that fails on, or disagrees with the masked model on, the ``example`` input.
Zeros then save no time: the timing table records :data:`WHOLE_MODEL` as every layer's backend
(:mod:`pruneflow.timing.profiler`), and a measured speedup is the masked model's against the
dense one, about 1x.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from pruneflow.errors import PruneflowError
from pruneflow.models.zoo import prunable_layers
from pruneflow.timing import backends as B
from pruneflow.timing.layers import ExecLayer, weight_sparsity
from pruneflow.timing.ops import is_plain_2x2, swap_fast_ops

__all__ = [
    "WHOLE_MODEL",
    "SparseRuntime",
    "auto_backend",
    "dense_backend",
    "prepare_inference_model",
    "set_submodule",
]

# the backend of every layer of a model run whole on torch (timing table, describe())
WHOLE_MODEL = "torch_whole"

# Roughly where the sparse kernels start to beat dense GEMM / oneDNN on one Zen 4 core (float32;
# 3x3 convs vary from 0.5 to 0.7 with their shape): the guess "auto" makes without a table.
AUTO_THRESHOLDS = {"linear": 0.4, "conv2d": 0.6}

_RELU_FUNCS = {torch.relu, torch.relu_, F.relu, torch.nn.functional.relu}

# Where one backend name is given for every layer: the backend that runs a layer the named one
# cannot (direct_numba runs convolutions of stride 1 or 2 only; csr_numba runs linear layers
# and the other convolutions but grouped ones), then dense.
FALLBACK = {"direct_numba": "csr_numba", "csr_numba": "dense", "csr": "dense"}


# A convolution on at most this many input channels and weight taps per output channel (the
# stem on a grey or RGB image) runs faster on the direct kernel than on oneDNN even with dense
# weights, so a runtime runs it there wherever it is to run dense (the dense reference
# included). One AVX2 thread: smallcnn's 1->32 3x3 at batch 16 0.36 against 0.41 ms (and it
# then writes straight into conv2's operand), resnet18_cifar's 3->64 3x3 at batch 8 1.1
# against 3.2 ms.
STEM_MAX_CHANNELS = 3
STEM_MAX_TAPS = 27


def dense_backend(layer: nn.Module) -> str:
    """The backend that runs ``layer`` with its weights dense: ``direct_numba`` for a stem
    convolution it supports (at most :data:`STEM_MAX_CHANNELS` input channels and
    :data:`STEM_MAX_TAPS` taps per output channel), else ``dense``."""
    if (
        isinstance(layer, nn.Conv2d)
        and layer.in_channels <= STEM_MAX_CHANNELS
        and layer.weight[0].numel() <= STEM_MAX_TAPS
        and "direct_numba" in B.available_backends()
        and B.get_backend("direct_numba").supports(layer)
    ):
        return "direct_numba"
    return "dense"


def auto_backend(layer: nn.Module, sparsity: float) -> str:
    """A sparse backend where the layer is sparse enough for it to beat ``dense``, else dense:
    ``direct_numba`` for the convolutions it runs, ``csr_numba`` for the rest."""
    op = "conv2d" if isinstance(layer, nn.Conv2d) else "linear"
    if sparsity < AUTO_THRESHOLDS[op]:
        return "dense"
    for name in ("direct_numba", "csr_numba"):
        if name in B.available_backends() and B.get_backend(name).supports(layer):
            return name
    return "dense"


def _bake_masks(model: nn.Module, masks: Mapping[str, torch.Tensor] | None) -> None:
    """Write masks into the weights (in place, on the copy) and drop prune reparametrisations."""
    mods = dict(model.named_modules())
    for mod in mods.values():
        if hasattr(mod, "weight_orig") and hasattr(mod, "weight_mask"):
            torch.nn.utils.prune.remove(mod, "weight")
    for name, mask in (masks or {}).items():
        if name not in mods or not isinstance(mods[name], (nn.Conv2d, nn.Linear)):
            raise PruneflowError(f"mask for '{name}': the model has no Conv2d/Linear of that name")
        weight = mods[name].weight
        if tuple(mask.shape) != tuple(weight.shape):
            raise PruneflowError(
                f"mask for '{name}' has shape {tuple(mask.shape)}, the weight {tuple(weight.shape)}"
            )
        with torch.no_grad():
            weight.mul_(mask.to(weight.dtype))


def _is_relu(node: fx.Node, mods: Mapping[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(mods.get(str(node.target)), nn.ReLU)
    if node.op == "call_function":
        return node.target in _RELU_FUNCS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _fold_and_fuse(gm: fx.GraphModule, layers: set[str]) -> tuple[dict[str, bool], dict[str, bool]]:
    """Fold BN into the layer before it, fuse a following ReLU, then a following 2x2 max
    pooling into a convolution; return (layer -> fused ReLU, layer -> fused pooling)."""
    mods = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(
            mods.get(str(node.target)), (nn.BatchNorm1d, nn.BatchNorm2d)
        ):
            continue
        prev = node.args[0] if node.args else None
        if not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        name, bn = str(prev.target), mods[str(node.target)]
        layer = mods.get(name)
        if name not in layers or calls.get(name) != 1 or not bn.track_running_stats:
            continue
        if isinstance(layer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            fused = fuse_conv_bn_eval(layer, bn)
        elif isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
            fused = fuse_linear_bn_eval(layer, bn)
        else:
            continue
        set_submodule(gm, name, fused)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    mods = dict(gm.named_modules())
    relu: dict[str, bool] = {}
    for node in list(gm.graph.nodes):
        name = str(node.target)
        if node.op != "call_module" or name not in layers or calls.get(name) != 1:
            continue
        users = list(node.users)
        if (
            len(users) == 1
            and _is_relu(users[0], mods)
            and list(users[0].all_input_nodes) == [node]
        ):
            users[0].replace_all_uses_with(node)
            gm.graph.erase_node(users[0])
            relu[name] = True
    pool = _fuse_pooling(gm, mods, layers, calls)
    gm.graph.lint()
    gm.recompile()
    return relu, pool


def _fuse_pooling(
    gm: fx.GraphModule, mods: Mapping[str, nn.Module], layers: set[str], calls: Mapping[str, int]
) -> dict[str, bool]:
    """Drop every 2x2 max-pooling module call that reads only a convolution's output, the
    convolution's only consumer; return the convolutions that pool (layer -> True)."""
    pool: dict[str, bool] = {}
    for node in list(gm.graph.nodes):
        name = str(node.target)
        if node.op != "call_module" or name not in layers or calls.get(name) != 1:
            continue
        if not isinstance(mods.get(name), nn.Conv2d) or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if (
            user.op == "call_module"
            and is_plain_2x2(mods[str(user.target)])
            and user.args == (node,)
            and not user.kwargs
        ):
            user.replace_all_uses_with(node)
            gm.graph.erase_node(user)
            pool[name] = True
    return pool


def _chained_convolutions(gm: fx.GraphModule, layers: set[str]) -> dict[str, str]:
    """Convolution -> the convolution that is its output's only reader, reading nothing else,
    both called once: the first may write its output straight into the second's operand."""
    mods = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1

    def conv(node: fx.Node) -> bool:
        name = str(node.target)
        return (
            node.op == "call_module"
            and name in layers
            and calls.get(name) == 1
            and isinstance(mods.get(name), ExecLayer)
            and mods[name].op == "conv2d"
        )

    chained = {}
    for node in gm.graph.nodes:
        if not conv(node) or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if conv(user) and user.args == (node,) and not user.kwargs:
            chained[str(node.target)] = str(user.target)
    return chained


def _feature_major_ok(gm: fx.GraphModule, name: str, linear_names: set[str]) -> bool:
    """True when every consumer of linear layer ``name`` is a linear layer reading it directly."""
    for node in gm.graph.nodes:
        if node.op == "call_module" and str(node.target) == name:
            users = list(node.users)
            return bool(users) and all(
                u.op == "call_module" and str(u.target) in linear_names and u.args[0] is node
                for u in users
            )
    return False


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` (``root.get_submodule``'s inverse)."""
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, module)


def prepare_inference_model(
    model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None, fold: bool = True
) -> tuple[nn.Module, dict[str, bool], dict[str, bool], bool]:
    """An eval copy with masks baked in, BN folded, ReLUs and 2x2 max poolings marked for
    fusion.

    Returns ``(module, relu_of_layer, pool_of_layer, traced)``; ``traced`` is False when
    ``torch.fx`` could not trace the model (then nothing is folded or fused).
    """
    work = copy.deepcopy(model).eval()
    for p in work.parameters():
        p.requires_grad_(False)
    _bake_masks(work, masks)
    layers = set(prunable_layers(work))
    if not fold:
        swap_fast_ops(work)
        return work, {}, {}, False
    try:
        # traced before the fast ops are swapped in: a MaxPool2d stays one call to fuse
        gm = fx.symbolic_trace(work)
    except Exception:  # noqa: BLE001 - any tracing failure means "run it module by module"
        swap_fast_ops(work)
        return work, {}, {}, False
    relu, pool = _fold_and_fuse(gm, layers)
    swap_fast_ops(gm)
    return gm, relu, pool, True


def _parameters_read_directly(net: nn.Module, layers: list[str], traced: bool) -> str | None:
    """Why the layers cannot be swapped for executable modules, or None when they can."""
    mods = dict(net.named_modules())
    for name in layers:
        layer = mods.get(name)
        if layer is not None and not isinstance(layer, (nn.Conv2d, nn.Linear)):
            return f"its forward uses the parameters of '{name}' without calling it"
    if traced:
        for node in net.graph.nodes:  # type: ignore[union-attr]
            owner = str(node.target).rpartition(".")[0]
            if node.op == "get_attr" and owner in layers:
                return f"its forward reads {node.target} directly"
    return None


class SparseRuntime(nn.Module):
    """A pruned model whose Conv2d/Linear layers run on per-layer backends (eval only).

    ``backends``: one backend name for every prunable layer (layers it cannot run fall back
    along :data:`FALLBACK`, at last to ``dense``), ``"auto"`` (:func:`auto_backend`), or a
    mapping layer -> backend name (unlisted layers are dense; an explicit backend that cannot
    run its layer is an error). A layer to run dense runs on :func:`dense_backend`'s choice:
    a stem convolution on ``direct_numba``, the rest on torch. See :meth:`from_table` to take
    the fastest backend per layer from a timing table.

    ``example``: an input to check the converted model on; when it fails there or its output
    differs from the masked model's, the model runs whole (see the module docstring), as it
    does when its forward reads a layer's parameters directly. ``whole`` then holds the reason
    (None: taken apart).
    """

    def __init__(
        self,
        model: nn.Module,
        backends: str | Mapping[str, str] = "auto",
        *,
        masks: Mapping[str, torch.Tensor] | None = None,
        fold: bool = True,
        example: torch.Tensor | None = None,
    ):
        super().__init__()
        self.layer_names = prunable_layers(model)
        self.whole: str | None = None
        net, relu, pool, traced = prepare_inference_model(model, masks, fold)
        self.traced = traced
        self.fused_relu = sorted(relu)
        self.fused_pool = sorted(pool)
        if isinstance(backends, Mapping) and WHOLE_MODEL in backends.values():
            self._run_whole(model, masks, "its timing table runs it whole")
            return
        reason = _parameters_read_directly(net, self.layer_names, traced)
        if reason is not None:
            self._run_whole(model, masks, reason)
            return
        self._take_apart(net, relu, pool, traced, backends)
        if example is not None:
            reason = self._disagrees(model, masks, example)
            if reason is not None:
                self._run_whole(model, masks, reason)

    def _run_whole(
        self, model: nn.Module, masks: Mapping[str, torch.Tensor] | None, reason: str
    ) -> None:
        net = copy.deepcopy(model).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        _bake_masks(net, masks)
        mods = dict(net.named_modules())
        self.whole = reason
        self.traced, self.fused_relu, self.fused_pool = False, [], []
        self.backends = {n: WHOLE_MODEL for n in self.layer_names if n in mods}
        self.sparsities = {n: weight_sparsity(mods[n].weight) for n in self.backends}
        self.net = net

    def _disagrees(
        self, model: nn.Module, masks: Mapping[str, torch.Tensor] | None, example: torch.Tensor
    ) -> str | None:
        reference = copy.deepcopy(model).eval()
        _bake_masks(reference, masks)
        with torch.no_grad():
            expected = reference(example)
            try:
                got = self.net(example)
            except Exception as exc:  # noqa: BLE001 - any failure: it cannot run taken apart
                return f"taken apart it fails: {type(exc).__name__}: {exc}"
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            return "taken apart its output has another type or shape"
        scale = float(expected.abs().max()) + 1e-6
        worst = float((got - expected).abs().max())
        if not worst <= 1e-3 * scale + 1e-4:
            return f"taken apart its output differs from the masked model's by {worst:.3g}"
        return None

    def _take_apart(
        self,
        net: nn.Module,
        relu: Mapping[str, bool],
        pool: Mapping[str, bool],
        traced: bool,
        backends: str | Mapping[str, str],
    ) -> None:
        mods = dict(net.named_modules())
        linear_names = {n for n in self.layer_names if isinstance(mods.get(n), nn.Linear)}
        if isinstance(backends, Mapping):
            unknown = sorted(set(backends) - set(self.layer_names))
            if unknown:
                raise PruneflowError(
                    f"backends given for layers the model does not have: {', '.join(unknown)}"
                )
        self.backends: dict[str, str] = {}
        self.sparsities: dict[str, float] = {}
        for name in self.layer_names:
            layer = mods.get(name)
            if layer is None:  # defined but never called in forward: nothing to run
                continue
            sparsity = weight_sparsity(layer.weight)
            backend = self._choose(name, layer, backends, sparsity)
            if backend == "dense":
                backend = dense_backend(layer)
            exe = B.build_layer(
                backend, layer, relu=relu.get(name, False), pool=pool.get(name, False)
            )
            if traced and name in linear_names:
                exe.feature_major = _feature_major_ok(net, name, linear_names)
            set_submodule(net, name, exe)
            self.backends[name] = backend
            self.sparsities[name] = sparsity
        if traced:
            for name, nxt in _chained_convolutions(net, set(self.backends)).items():
                net.get_submodule(name).next_layer = (net, nxt)
        self.net = net

    @staticmethod
    def _choose(
        name: str, layer: nn.Module, backends: str | Mapping[str, str], sparsity: float
    ) -> str:
        if isinstance(backends, str):
            if backends == "auto":
                return auto_backend(layer, sparsity)
            chosen = backends
            while chosen != "dense" and not B.get_backend(chosen).supports(layer):
                chosen = FALLBACK.get(chosen, "dense")
            return chosen
        chosen = backends.get(name, "dense")
        if not B.get_backend(chosen).supports(layer):
            raise PruneflowError(f"backend '{chosen}' cannot run layer '{name}' ({layer!r})")
        return chosen

    @classmethod
    def from_table(
        cls,
        model: nn.Module,
        table: pd.DataFrame,
        *,
        masks: Mapping[str, torch.Tensor] | None = None,
        fold: bool = True,
    ) -> SparseRuntime:
        """Each layer in ``table`` runs on the backend recorded at its nearest level.

        The layer's sparsity is read from its (masked) weight; layers the table does not list
        (e.g. skipped first/last layers) run dense.
        """
        missing = {"layer", "sparsity", "backend"} - set(table.columns)
        if missing:
            raise PruneflowError(f"timing table lacks columns: {', '.join(sorted(missing))}")
        mods = dict(model.named_modules())
        choice: dict[str, str] = {}
        for name, rows in table.groupby("layer", sort=False):
            if name not in mods or not isinstance(mods[name], (nn.Conv2d, nn.Linear)):
                raise PruneflowError(f"timing table layer '{name}' is not in the model")
            weight = mods[name].weight.detach()  # already masked under torch prune
            if masks is not None and name in masks:
                weight = weight * masks[name].to(weight.dtype)
            sparsity = weight_sparsity(weight)
            nearest = (rows["sparsity"] - sparsity).abs().idxmin()
            choice[str(name)] = str(rows.loc[nearest, "backend"])
        return cls(model, choice, masks=masks, fold=fold)

    def layer(self, name: str) -> ExecLayer:
        """The executable module running prunable layer ``name``."""
        if name not in self.backends:
            raise PruneflowError(f"no prunable layer '{name}' in this runtime")
        if self.whole is not None:
            raise PruneflowError(f"this runtime runs the model whole ({self.whole})")
        return self.net.get_submodule(name)

    def describe(self) -> dict[str, Any]:
        """Per layer: backend, sparsity, fused ReLU and 2x2 max pooling; whether BN was folded;
        why the model runs whole (None: taken apart)."""
        return {
            "traced": self.traced,
            "whole": self.whole,
            "layers": {
                n: {
                    "backend": b,
                    "sparsity": self.sparsities[n],
                    "relu": n in self.fused_relu,
                    "pool": n in self.fused_pool,
                }
                for n, b in self.backends.items()
            },
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(x)
