"""Where a model comes from: the zoo, torchvision by name, or the user's own factory.

A model name (``model.name``, each method's ``models:`` entries) is one of

* a zoo name (``smallcnn``, ``resnet18_cifar``, ...: :data:`pruneflow.models.zoo.MODEL_NAMES`);
* ``torchvision:NAME``: any torchvision classification model (``torchvision.models.NAME``,
  random init, ``num_classes`` outputs), its first conv adapted to the input's channels as
  the zoo's torchvision entries are;
* ``package.module:factory`` (or ``module:factory``): the user's code, imported from the
  current folder or the installed environment and called as
  ``factory(num_classes=..., in_shape=...)``, or with no arguments when it takes none; it
  must return an ``nn.Module``.

Names of the last two kinds hold ``:`` and ``.``: :func:`path_name` turns any model (or data
set) name into one safe as a path component, and is what :mod:`pruneflow.layout` uses.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.io import file_hash
from pruneflow.models.zoo import MODEL_NAMES, InShape, adapt_stem

TORCHVISION_PREFIX = "torchvision:"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_IMPORT_PATH = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}$")
_TORCHVISION = re.compile(rf"^torchvision:{_IDENT}$")


@dataclass(frozen=True)
class ModelSource:
    """A parsed model name: ``kind`` and, for torchvision and import paths, its parts."""

    name: str
    kind: Literal["zoo", "torchvision", "import"]
    module: str = ""
    attr: str = ""


def is_import_path(name: str) -> bool:
    """``package.module:attr`` syntax (not ``torchvision:NAME``)."""
    return bool(_IMPORT_PATH.match(name)) and not name.startswith(TORCHVISION_PREFIX)


def parse_model_name(name: str) -> ModelSource:
    """The source of model ``name``; a name of none of the three forms is one clear error."""
    if name in MODEL_NAMES:
        return ModelSource(name, "zoo")
    if _TORCHVISION.match(name):
        arch = name[len(TORCHVISION_PREFIX) :]
        return ModelSource(name, "torchvision", "torchvision.models", arch)
    if is_import_path(name):
        module, _, attr = name.partition(":")
        return ModelSource(name, "import", module, attr)
    raise PruneflowError(
        f"unknown model '{name}'; choose a zoo model ({', '.join(map(repr, MODEL_NAMES))}), "
        "torchvision:NAME, or an import path package.module:factory"
    )


def path_name(name: str) -> str:
    """``name`` as one path component: zoo and built-in data set names unchanged, ``:`` -> ``-``.

    Injective over valid names: a zoo name, torchvision name or import path holds no ``-`` and
    no ``/``, so the only ``-`` comes from the one ``:``.
    """
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise PruneflowError(f"'{name}' cannot name an artifact folder")
    return name.replace(":", "-")


def _import_roots() -> None:
    # the project folder (the current one) first, as `python -m` would: the user's module is
    # found there before an installed one of the same name
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def resolve_attr(path: str, what: str = "factory") -> Any:
    """The object at import path ``package.module:attr`` (one clear error when it is not there)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not is_import_path(path):
        raise PruneflowError(f"'{path}' is not an import path package.module:{what}")
    _import_roots()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail in any way while importing
        raise PruneflowError(
            f"{path}: cannot import {module_name} ({type(exc).__name__}: {exc})".replace("\n", " ")
        ) from None
    if not hasattr(module, attr):
        raise PruneflowError(f"{path}: module {module_name} has no attribute '{attr}'")
    obj = getattr(module, attr)
    if not callable(obj):
        raise PruneflowError(f"{path}: '{attr}' is a {type(obj).__name__}, not a callable {what}")
    return obj


def source_file(path: str) -> Path | None:
    """The file of the module an import path names (None when it has none, e.g. a builtin)."""
    module_name = path.partition(":")[0]
    resolve_attr(path)
    found = inspect.getsourcefile(sys.modules[module_name]) if module_name in sys.modules else None
    return Path(found).resolve() if found else None


def model_source_file(name: str) -> Path | None:
    """The user's module file behind model ``name`` (None for zoo and torchvision models):
    what a step's fingerprint must include so that editing it re-runs what depends on it."""
    source = parse_model_name(name)
    return source_file(name) if source.kind == "import" else None


def call_factory(path: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``factory(**kwargs)`` when it takes those keywords, ``factory()`` when it takes no
    arguments; any exception it raises becomes one line naming ``path``."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    takes_none = sig is not None and not any(
        p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in sig.parameters.values()
    )
    accepts = (
        sig is None
        or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        or set(kwargs) <= set(sig.parameters)
    )
    try:
        if accepts:
            return factory(**kwargs)
        if takes_none:
            return factory()
    except Exception as exc:  # the user's code may raise anything
        raise PruneflowError(
            f"{path} raised {type(exc).__name__}: {exc}".replace("\n", " ")
        ) from None
    wanted = ", ".join(f"{k}=..." for k in kwargs)
    raise PruneflowError(f"{path}{sig}: must take ({wanted}) or no arguments")


def _adapt_torchvision(model: nn.Module, in_shape: InShape) -> nn.Module:
    """The first conv takes ``in_shape``'s channels (the zoo's rule for its torchvision
    entries: the rest of the stem stays ImageNet's)."""
    first = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        adapt_stem(model, first, in_shape[0], cifar_stem=False)
    return model


def build_source(source: ModelSource, num_classes: int, in_shape: InShape) -> nn.Module:
    """A freshly initialised model of a torchvision or import-path source."""
    if source.kind == "torchvision":
        import torchvision.models as tvm

        if source.attr not in tvm.list_models(module=tvm):
            raise PruneflowError(
                f"{source.name}: torchvision has no classification model '{source.attr}' "
                "(see torchvision.models.list_models())"
            )
        builder = tvm.get_model_builder(source.attr)
        model = call_factory(source.name, builder, {"weights": None, "num_classes": num_classes})
        return _adapt_torchvision(model, in_shape)
    factory = resolve_attr(source.name)
    model = call_factory(
        source.name, factory, {"num_classes": num_classes, "in_shape": tuple(in_shape)}
    )
    if not isinstance(model, nn.Module):
        raise PruneflowError(
            f"{source.name} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def check_output(model: nn.Module, name: str, in_shape: InShape, num_classes: int) -> None:
    """One forward pass of two blank images: ``model`` must map ``[N, *in_shape]`` to
    ``[N, num_classes]`` logits (a factory that ignores ``num_classes`` is caught here,
    before any training)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *in_shape))
    except Exception as exc:  # the user's forward may fail in any way
        raise PruneflowError(
            f"{name} fails on images of shape {tuple(in_shape)}: {type(exc).__name__}: {exc}"
        ).with_traceback(None) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PruneflowError(
            f"{name} returns {got} for 2 images of shape {tuple(in_shape)}; expected logits "
            f"(2, {num_classes}) for the data set's {num_classes} classes"
        )


def user_code(names: list[str]) -> dict[str, str] | None:
    """Content hashes of the user's source files behind these model / data set names (None
    when none is an import path): what a step's fingerprint takes in through its
    ``environment``, so that editing the user's module re-runs the steps that run it."""
    hashes = {}
    for name in names:
        found = source_file(name) if is_import_path(name) else None
        if found is not None:
            hashes[name] = file_hash(found)
    return hashes or None
