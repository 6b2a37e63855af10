"""Steps ``recondb_layer`` (one per layer) and ``recondb``: SPDY's reconstruction database.

``recondb_layer`` is a fan-out step over the layers SPDY prunes (item ``{"layer": name}``).
Each item loads the dense checkpoint, captures *its own* layer's ``H = 2 X X^T`` in one forward
pass over the calibration images (the dense model's inputs to that layer, so layers are
independent), solves every grid level (``pruneflow.recon.solve_layer``) and writes
``artifacts/recondb/<model>/layers/<layer>.safetensors`` with its index rows in the file's
metadata. A crash after 5 of 9 layers therefore resumes at the 6th, and layers fan out on the
flow's task runner. Capturing per layer repeats the cheap forward pass (about a second for
smallcnn on 1,024 images) instead of holding every layer's Hessian (smallcnn's fc1 alone is
12,544^2 floats in dense form) or passing them between tasks.

``recondb`` gathers the layers' rows into ``index.parquet``; the database then opens with
``ReconstructionDB.open(layout.recondb_dir(p))``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from pruneflow import layout, wallclock
from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.models import build
from pruneflow.recon import ReconstructionDB, capture_hessians, solve_layer, write_index
from pruneflow.recon.database import INDEX_NAME, layer_file, read_layer_rows, write_layer
from pruneflow.runtime import configure, progress_enabled
from pruneflow.steps.base import Item, Step
from pruneflow.steps.spdy_inputs import (
    CALIB_KEYS,
    calibration_batches,
    dense_model,
    inputs_of_dense,
    spdy_layers,
)
from pruneflow.steps.timing import grid_levels

LAYERS_SUBDIR = "layers"
RECON_KEYS = (
    "spdy.recon.damp",
    "spdy.recon.solver",
    "spdy.recon.exact_max_work",
)
# the device changes results only within float tolerance, but a GPU host's database must not be
# served as a CPU host's cache hit silently: it is part of the fingerprint
LAYER_READS = (
    "data.dataset",
    "data.root",
    "data.image_size",
    "model.name",
    "spdy.grid",
    *CALIB_KEYS,
    *RECON_KEYS,
    "spdy.recon.device",
)


def layer_path(p: Params, layer: str) -> Path:
    return layout.recondb_dir(p) / LAYERS_SUBDIR / layer_file(layer)


def index_path(p: Params) -> Path:
    return layout.recondb_dir(p) / INDEX_NAME


# layer names depend on the architecture only, not on the input shape or the class count, so
# the items are known from params alone (before any data is prepared, e.g. for `dvc dag`)
_NAMING_SHAPE = (3, 32, 32)


@functools.lru_cache(maxsize=8)
def _naming_model(name: str) -> torch.nn.Module:
    """``name`` built at the naming shape, once per process: the items are listed for every
    fingerprint, input list and item check (26 ResNet-18 builds in one small run)."""
    return build(name, 10, _NAMING_SHAPE)


def layer_items(p: Params) -> list[dict[str, Any]]:
    """One item per layer SPDY prunes, in forward order (from the architecture alone)."""
    return [{"layer": name} for name in spdy_layers(p, _naming_model(p.model.name))]


def layer_items_longest_first(p: Params) -> list[dict[str, Any]]:
    """:func:`layer_items` with the layers of most solver work first (``rows * d^2``, the
    size of the weight times its Hessian's side): the flow submits them in this order, so
    the longest solve never starts last while the other workers sit idle (smallcnn: fc1,
    31 s of 105, ran alone at the end; 69 s of wall time for the database, about 55 s
    longest first)."""
    layers = dict(_naming_model(p.model.name).named_modules())

    def work(item: dict[str, Any]) -> int:
        w = layers[item["layer"]].weight
        d = w[0].numel()
        return int(w.shape[0]) * d * d

    return sorted(layer_items(p), key=work, reverse=True)


def _check_item(p: Params, item: Item) -> str:
    layer = (item or {}).get("layer")
    names = [i["layer"] for i in layer_items(p)]
    if layer not in names:
        raise PruneflowError(
            f"recondb_layer: '{layer}' is not a layer SPDY prunes in {p.model.name} "
            f"(choose one of {', '.join(names)})"
        )
    return str(layer)


def _layer_compute(p: Params, item: Item) -> dict[str, Any]:
    configure(p.runtime.threads, p.runtime.flush_denormal)
    layer = _check_item(p, item)
    model = dense_model(p)
    batches = calibration_batches(p)
    r = p.spdy.recon
    progress = progress_enabled(p.runtime.progress)
    try:
        hessian = capture_hessians(model, [layer], batches, device=r.device, progress=progress)
    except RuntimeError as exc:  # a shape mismatch inside the model's forward
        raise PruneflowError(
            f"recondb {p.model.name}: calibration images of shape "
            f"{tuple(batches[0][0].shape[1:])} do not fit the model: {exc}"
        ) from exc
    weight = dict(model.named_modules())[layer].weight
    try:
        solution = solve_layer(
            weight,
            hessian.pop(layer),
            grid_levels(p),
            damp=r.damp,
            solver=r.solver,
            device=r.device,
            name=layer,
            exact_max_work=r.exact_max_work,
            progress=progress,
        )
    except PruneflowError as exc:
        raise PruneflowError(f"{exc} (building {layer_path(p, layer)})") from exc
    write_layer(layout.recondb_dir(p), layer, solution, subdir=LAYERS_SUBDIR)
    wallclock.note("solve", solution.seconds)  # not in the layer file: see pruneflow.wallclock
    return {
        "layer": layer,
        "solver": solution.solver,
        "calib_images": sum(len(b[0]) for b in batches),
        "mean_rel_error": float(solution.rel_error[1:].mean()),
        "max_rel_error": float(solution.rel_error.max()),
    }


RECONDB_LAYER = Step(
    name="recondb_layer",
    reads=LAYER_READS,
    inputs=lambda p, item: inputs_of_dense(p),
    outputs=lambda p, item: [layer_path(p, _check_item(p, item))],
    compute=_layer_compute,
    description="one layer's reconstructed weights at every grid level (exact OBS / SparseGPT)",
    fan_out=True,
    items=layer_items,
)


def _index_inputs(p: Params) -> list[Path]:
    return [layout.labels_table(p)] + [layer_path(p, i["layer"]) for i in layer_items(p)]


def _index_compute(p: Params) -> dict[str, Any]:
    root = layout.recondb_dir(p)
    rows: list[dict[str, Any]] = []
    for item in layer_items(p):
        file = f"{LAYERS_SUBDIR}/{layer_file(item['layer'])}"
        layer_rows, meta = read_layer_rows(root, file)
        if meta.get("layer") != item["layer"]:
            raise PruneflowError(f"{root / file} holds layer '{meta.get('layer')}'")
        rows += layer_rows
    write_index(root, rows, model=p.model.name, extra={"damp": p.spdy.recon.damp})
    db = ReconstructionDB.open(root, model_name=p.model.name, grid=grid_levels(p))
    index = db.index
    return {
        "layers": len(db.layers),
        "levels": len(db.grid),
        "solvers": sorted(set(index.loc[index["level"] > 0, "solver"])),
        "mean_rel_error": float(index.loc[index["level"] > 0, "rel_error"].mean()),
    }


RECONDB = Step(
    name="recondb",
    reads=("data.dataset", "model.name", "spdy.grid", "spdy.recon.damp"),
    inputs=_index_inputs,
    outputs=lambda p: [index_path(p)],
    compute=_index_compute,
    description="index the per-layer files -> artifacts/recondb/<model>/index.parquet",
)
