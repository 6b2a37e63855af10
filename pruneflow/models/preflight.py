"""Checks of the user's own model, weights, layer patterns and data, before any step runs.

``pruneflow run`` calls :func:`check_own_inputs` first, so that an import path that does not
resolve, a factory that raises, a checkpoint that does not fit, a model without prunable
layers, include/exclude patterns that match nothing, or a data factory returning the wrong
types stop the run with one line before anything is computed or written. Zoo models on
built-in data sets with no weights and no patterns need none of this and are not loaded.
"""

from __future__ import annotations

import torch

from pruneflow import config
from pruneflow.chex.groups import find_groups
from pruneflow.config import Params
from pruneflow.data import load_dataset
from pruneflow.errors import PruneflowError
from pruneflow.models import build
from pruneflow.models.sources import check_output, is_import_path, parse_model_name
from pruneflow.models.weights import load_trained
from pruneflow.models.zoo import prunable_layers
from pruneflow.sparsity.grid import skipped_layers

# which (method, models) a flow runs; None: the top-level model and data
FLOW_METHODS: dict[str, tuple[str | None, ...]] = {
    "all": (None, "spdy", "sdd", "chex"),
    "dense": (None,),
    "spdy": ("spdy",),
    "sdd": ("sdd",),
    "chex": ("chex",),
    "profile": ("spdy",),  # the SPDY models' timing tables
    "structured": ("structured",),
}


def _scopes(params: Params, flow: str) -> list[tuple[str | None, Params]]:
    """(method, that method's params for one of its models) for every model the flow runs."""
    if flow not in FLOW_METHODS:
        raise PruneflowError(f"unknown flow '{flow}'; choose one of: {', '.join(FLOW_METHODS)}")
    scopes: list[tuple[str | None, Params]] = []
    for method in FLOW_METHODS[flow]:
        if method is None:
            scopes.append((None, params))
        else:
            models = getattr(params, method).models
            scopes += [(method, config.scoped(params, f"{method}:{m}")) for m in models]
    return scopes


def _patterns(p: Params, method: str | None) -> tuple[list[str], list[str]]:
    """The include/exclude patterns ``method`` prunes its layers by (none for dense)."""
    if method == "spdy":
        return p.spdy.grid.include, p.spdy.grid.exclude
    if method in ("sdd", "chex"):
        section = getattr(p, method)
        return section.include, section.exclude
    return [], []


def _needs_check(p: Params, method: str | None) -> bool:
    return (
        parse_model_name(p.model.name).kind != "zoo"
        or is_import_path(p.data.dataset)
        or p.model.weights is not None
        or any(_patterns(p, method))
    )


def check_own_inputs(params: Params, flow: str) -> int:
    """Build and check every user-supplied model, checkpoint, pattern and data set the flow
    uses; returns how many (method, model) pairs were checked. Raises one PruneflowError."""
    checked = 0
    shapes: dict[tuple[str, str, int], tuple[int, tuple[int, ...]]] = {}
    for method, p in _scopes(params, flow):
        if not _needs_check(p, method):
            continue
        key = (p.data.dataset, p.data.root, p.data.image_size)
        if key not in shapes:
            data = load_dataset(*key)
            shapes[key] = (data.num_classes, tuple(data.in_shape))
        num_classes, in_shape = shapes[key]
        model = build(p.model.name, num_classes, in_shape)  # type: ignore[arg-type]
        names = prunable_layers(model)
        check_output(model, p.model.name, in_shape, num_classes)  # type: ignore[arg-type]
        include, exclude = _patterns(p, method)
        if method == "spdy":
            g = p.spdy.grid
            skipped_layers(p.model.name, names, g.skip_first_last, include, exclude)
        elif method == "sdd":
            skipped_layers(p.model.name, names, False, include, exclude)
        elif method == "chex" and (include or exclude):
            example = torch.zeros(2, *in_shape)
            find_groups(model, example, include, exclude, p.model.name)
        if p.model.weights is not None:
            load_trained(model, p.model.weights, f"model {p.model.name}")
        checked += 1
    return checked
