"""The reconstruction database on disk: writing it, opening it lazily, stitching profiles.

Layout of ``<dir>``:

- ``<layer>.safetensors``: one file per layer, one tensor per level under ``level_000``,
  ``level_001``, ... in the layer's own weight shape and dtype (level 0 is the dense weight).
- ``index.parquet``: one row per (layer, level): ``layer, level, sparsity, nnz, rel_error,
  solver, file, key``. Its metadata records the format version, the grid, the model name and,
  per layer, the weight shape, dtype and the file's content hash.

Every file is written atomically (``io.atomic_path``), the index last, so a crash never
leaves a half-written file under its final name and a database without an index does not
open. :meth:`ReconstructionDB.open` checks the index against the files (headers only, via
``safe_open``, which memory-maps them: weights are read when asked for) and, when given, against
the model and grid the caller expects. :class:`Stitcher` copies stored weights into a model's
prunable layers and remembers, on the model, which level each layer holds, so stitching the
next profile copies only the layers whose level changed (SPDY stitches hundreds of profiles
per search); a layer whose weight was modified in place since is copied again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from pruneflow.errors import PruneflowError
from pruneflow.io import file_hash, parquet_metadata, read_parquet, save_tensors, write_parquet
from pruneflow.recon.solve import LayerSolution

FORMAT_VERSION = 1
INDEX_NAME = "index.parquet"
INDEX_COLUMNS = {
    "layer": "O",
    "level": "iu",
    "sparsity": "f",
    "nnz": "iu",
    "rel_error": "f",
    "solver": "O",
    "file": "O",
    "key": "O",
}
_RECORD_ATTR = "_pruneflow_recon_stitch"
ROWS_KEY = "index_rows"


def level_key(level: int) -> str:
    return f"level_{level:03d}"


def layer_file(layer: str) -> str:
    return f"{layer}.safetensors"


def write_layer(
    root: str | Path, layer: str, solution: LayerSolution, subdir: str = ""
) -> list[dict[str, Any]]:
    """Write ``<root>/<subdir>/<layer>.safetensors`` (every level) atomically; return its index
    rows (``file`` relative to ``root``). The rows are also stored in the file's metadata, so a
    layer solved on its own (one pipeline task per layer) can be indexed later
    (:func:`read_layer_rows`)."""
    root = Path(root)
    name = f"{subdir}/{layer_file(layer)}" if subdir else layer_file(layer)
    levels = len(solution.sparsities)
    tensors = {level_key(i): solution.weights[i] for i in range(levels)}
    rows = [
        {
            "layer": layer,
            "level": i,
            "sparsity": solution.sparsities[i],
            "nnz": solution.nnz[i],
            "rel_error": float(solution.rel_error[i]),
            "solver": solution.solver_of(i),
            "file": name,
            "key": level_key(i),
        }
        for i in range(levels)
    ]
    meta = {
        "layer": layer,
        "solver": solution.solver,
        "damp": repr(solution.damp),
        "sparsities": json.dumps(solution.sparsities),
        ROWS_KEY: json.dumps(rows),
    }
    save_tensors(root / name, tensors, meta)
    return rows


def read_layer_rows(root: str | Path, file: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The index rows and metadata stored in ``<root>/<file>`` by :func:`write_layer`."""
    path = Path(root) / file
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError as exc:
        raise PruneflowError(f"missing reconstruction layer file {path}") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise PruneflowError(f"corrupt or truncated layer file {path}: {exc}") from exc
    try:
        rows = json.loads(meta[ROWS_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise PruneflowError(f"{path} carries no index rows (not written by write_layer?)") from exc
    return rows, meta


def write_index(
    root: str | Path,
    rows: Iterable[Mapping[str, Any]],
    *,
    model: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<root>/index.parquet`` from the rows ``write_layer`` returned (any layer order).

    Checks that every layer has the same grid, levels ``0..L-1`` and an existing file, and
    records each file's shape, dtype and content hash in the metadata.
    """
    root = Path(root)
    frame = pd.DataFrame(list(rows), columns=list(INDEX_COLUMNS))
    if frame.empty:
        raise PruneflowError(f"no layers to index in {root}")
    layers = list(dict.fromkeys(frame["layer"]))
    grid: list[float] | None = None
    info: dict[str, Any] = {}
    for layer in layers:
        part = frame[frame["layer"] == layer].sort_values("level")
        if list(part["level"]) != list(range(len(part))):
            raise PruneflowError(f"layer '{layer}': levels are not 0..{len(part) - 1}")
        sparsities = [float(s) for s in part["sparsity"]]
        if grid is None:
            grid = sparsities
        elif sparsities != grid:
            raise PruneflowError(f"layer '{layer}' has a different sparsity grid than the others")
        files = set(part["file"])
        if len(files) != 1:
            raise PruneflowError(f"layer '{layer}': rows name several files {sorted(files)}")
        path = root / files.pop()
        shape, dtype = _header(path, layer, level_key(0))
        info[layer] = {
            "file": path.relative_to(root).as_posix(),
            "shape": shape,
            "dtype": dtype,
            "hash": file_hash(path),
        }
    order = {name: i for i, name in enumerate(layers)}
    frame = frame.assign(_rank=frame["layer"].map(order)).sort_values(["_rank", "level"])
    frame = frame.drop(columns="_rank")
    frame = frame.astype({"level": "int64", "nnz": "int64", "sparsity": "float64"})
    meta = {"format": FORMAT_VERSION, "model": model, "grid": grid, "layers": info, **(extra or {})}
    return write_parquet(root / INDEX_NAME, frame.reset_index(drop=True), meta)


def _header(path: Path, layer: str, key: str) -> tuple[list[int], str]:
    try:
        with safe_open(str(path), "pt") as f:
            sl = f.get_slice(key)
            return list(sl.get_shape()), str(sl.get_dtype())
    except FileNotFoundError as exc:
        raise PruneflowError(f"layer '{layer}': missing file {path}") from exc
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise PruneflowError(f"layer '{layer}': corrupt or truncated file {path}: {exc}") from exc


@dataclass
class _Layer:
    file: Path
    shape: list[int]
    handle: Any


class ReconstructionDB:
    """A reconstruction database opened read-only; tensors are memory-mapped and read lazily."""

    def __init__(
        self, root: Path, index: pd.DataFrame, meta: dict[str, Any], layers: dict[str, _Layer]
    ):
        self.root = root
        self.index = index
        self.meta = meta
        self._layers = layers
        self.key = f"{root.resolve()}:{file_hash(root / INDEX_NAME)}"

    @property
    def layers(self) -> list[str]:
        return list(self._layers)

    @property
    def grid(self) -> list[float]:
        return list(self.meta["grid"])

    @property
    def model_name(self) -> str | None:
        return self.meta.get("model")

    def shape(self, layer: str) -> list[int]:
        return list(self._entry(layer).shape)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        model: nn.Module | None = None,
        model_name: str | None = None,
        grid: Sequence[float] | None = None,
        verify: bool = False,
    ) -> ReconstructionDB:
        """Open the database in ``path`` and check it is whole (and the one the caller wants).

        ``model``: every stored layer must exist in it with the same weight shape.
        ``model_name``: must equal the name recorded at build time (when one was). ``grid``:
        the stored sparsities must equal it. ``verify``: re-hash every file against the index
        (reads everything once; catches corruption inside the tensor data, which the header
        checks cannot).
        """
        root = Path(path)
        index_path = root / INDEX_NAME
        if not index_path.is_file():
            raise PruneflowError(f"{root} is not a reconstruction database: no {INDEX_NAME}")
        index = read_parquet(index_path, INDEX_COLUMNS)
        meta = parquet_metadata(index_path)
        if meta.get("format") != FORMAT_VERSION or not isinstance(meta.get("layers"), dict):
            raise PruneflowError(
                f"{index_path}: not a reconstruction index of format {FORMAT_VERSION}"
            )
        stored = [float(s) for s in meta["grid"]]
        if grid is not None and not _same_grid(stored, grid):
            raise PruneflowError(
                f"{root}: built for a different sparsity grid ({len(stored)} levels, "
                f"{_fmt(stored)}) than asked ({len(grid)} levels, {_fmt(list(grid))})"
            )
        if model_name is not None and meta.get("model") not in (None, model_name):
            raise PruneflowError(
                f"{root}: built for model '{meta.get('model')}', not '{model_name}'"
            )
        layers: dict[str, _Layer] = {}
        # the index's rows are in forward order; the metadata's JSON keys come back sorted
        # (a model whose layer names do not sort in forward order got its layers reordered)
        order = list(dict.fromkeys(index["layer"]))
        if set(order) != set(meta["layers"]):
            raise PruneflowError(f"{index_path}: its rows and metadata list different layers")
        for name in order:
            info = meta["layers"][name]
            part = index[index["layer"] == name].sort_values("level")
            file = root / str(info["file"])
            if list(part["level"]) != list(range(len(stored))) or not _same_grid(
                [float(s) for s in part["sparsity"]], stored
            ):
                raise PruneflowError(f"{index_path}: layer '{name}' does not list every level")
            handle = _open_file(file, name, info, len(stored), verify)
            layers[name] = _Layer(file, list(info["shape"]), handle)
        db = cls(root, index, meta, layers)
        if model is not None:
            db.check_model(model)
        return db

    def check_model(self, model: nn.Module) -> None:
        """Every stored layer must be a module of ``model`` with the stored weight shape."""
        modules = dict(model.named_modules())
        for name, entry in self._layers.items():
            module = modules.get(name)
            weight = getattr(module, "weight", None)
            if not isinstance(weight, Tensor):
                raise PruneflowError(
                    f"{entry.file}: layer '{name}' of this database is not in the "
                    f"{type(model).__name__} model (a database for another model?)"
                )
            if list(weight.shape) != entry.shape:
                raise PruneflowError(
                    f"{entry.file}: layer '{name}' stores weights of shape {entry.shape}, the "
                    f"model's is {list(weight.shape)} (a database for another model?)"
                )

    def weights(self, layer: str, level: int) -> Tensor:
        """A copy of the stored weight of ``layer`` at ``level`` (read from the mapped file)."""
        return self._tensor(layer, level).clone()

    def _tensor(self, layer: str, level: int) -> Tensor:
        entry = self._entry(layer)
        if not isinstance(level, int) or isinstance(level, bool):
            level = _as_level(level, layer)
        if not 0 <= level < len(self.meta["grid"]):
            raise PruneflowError(
                f"layer '{layer}': level {level} is not in the database's grid "
                f"(0..{len(self.meta['grid']) - 1})"
            )
        try:
            tensor = entry.handle.get_tensor(level_key(level))
        except (SafetensorError, OSError, ValueError) as exc:
            raise PruneflowError(f"layer '{layer}': cannot read {entry.file}: {exc}") from exc
        return tensor

    def _entry(self, layer: str) -> _Layer:
        if layer not in self._layers:
            raise PruneflowError(f"layer '{layer}' is not in the database {self.root}")
        return self._layers[layer]

    def stitcher(self, model: nn.Module) -> Stitcher:
        return Stitcher(self, model)

    def stitch(self, model: nn.Module, profile: Mapping[str, int]) -> nn.Module:
        """Give ``model``'s layers in ``profile`` the stored weights of their level; returns it.

        Only weights change (biases, BN and layers not in ``profile`` are untouched), in place.
        Layers already at their level since the last stitch are not copied again.
        """
        Stitcher(self, model).apply(profile)
        return model


class Stitcher:
    """Stitches profiles from one database into one model, copying only changed layers.

    The current level of every stitched layer is recorded on the model itself (so a plain
    ``db.stitch`` call sees it too), with each weight's storage pointer and in-place version
    counter: a weight changed since (by an optimizer step, say) counts as changed.
    """

    def __init__(self, db: ReconstructionDB, model: nn.Module):
        self.db = db
        self.model = model
        self.swapped: list[str] = []
        modules = dict(model.named_modules())
        self._params: dict[str, Tensor] = {}
        for name in db.layers:
            weight = getattr(modules.get(name), "weight", None)
            if isinstance(weight, Tensor):
                self._params[name] = weight

    @property
    def levels(self) -> dict[str, int]:
        """The level every layer holds according to the record (layers never stitched: none)."""
        record = self._record()
        return {k: v for k, (v, _) in record.items()}

    def _record(self) -> dict[str, tuple[int, tuple[int, int]]]:
        stored = getattr(self.model, _RECORD_ATTR, None)
        if not stored or stored.get("db") != self.db.key:
            return {}
        return stored["layers"]

    def apply(self, profile: Mapping[str, int]) -> list[str]:
        """Stitch ``profile`` (layer -> level); returns the layers actually copied."""
        plan: dict[str, int] = {}
        for layer, level in profile.items():
            entry = self.db._entry(layer)
            param = self._params.get(layer)
            if param is None:
                raise PruneflowError(
                    f"{entry.file}: layer '{layer}' is not in the {type(self.model).__name__} "
                    "model (a database for another model?)"
                )
            if list(param.shape) != entry.shape:
                raise PruneflowError(
                    f"{entry.file}: layer '{layer}' stores weights of shape {entry.shape}, "
                    f"the model's is {list(param.shape)} (a database for another model?)"
                )
            plan[layer] = _as_level(level, layer)
            if not 0 <= plan[layer] < len(self.db.grid):
                raise PruneflowError(
                    f"layer '{layer}': level {level} is not in the database's grid "
                    f"(0..{len(self.db.grid) - 1})"
                )
        record = dict(self._record())
        swapped = []
        for layer, level in plan.items():
            param = self._params[layer]
            state = (param.data_ptr(), param._version)
            if record.get(layer) == (level, state):
                continue
            with torch.no_grad():
                param.copy_(self.db._tensor(layer, level))
            record[layer] = (level, (param.data_ptr(), param._version))
            swapped.append(layer)
        self.model.__dict__[_RECORD_ATTR] = {"db": self.db.key, "layers": record}
        self.swapped = swapped
        return swapped


def _open_file(file: Path, layer: str, info: Mapping[str, Any], levels: int, verify: bool) -> Any:
    if not file.is_file():
        raise PruneflowError(f"layer '{layer}': missing file {file}")
    if verify and file_hash(file) != info.get("hash"):
        raise PruneflowError(
            f"layer '{layer}': {file} has changed since the index was written (corrupt?)"
        )
    try:
        handle = safe_open(str(file), "pt")
        keys = set(handle.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise PruneflowError(f"layer '{layer}': corrupt or truncated file {file}: {exc}") from exc
    expected = {level_key(i) for i in range(levels)}
    if keys != expected:
        raise PruneflowError(
            f"layer '{layer}': {file} holds {len(keys)} tensors, not the {levels} levels "
            "the index lists (a database for another grid?)"
        )
    shape = list(info["shape"])
    for key in sorted(keys):
        sl = handle.get_slice(key)
        if list(sl.get_shape()) != shape or str(sl.get_dtype()) != info.get("dtype"):
            raise PruneflowError(
                f"layer '{layer}': {file} holds {key} of shape {sl.get_shape()} "
                f"{sl.get_dtype()}, the index says {shape} {info.get('dtype')}"
            )
    return handle


def _as_level(level: Any, layer: str) -> int:
    try:
        as_int = int(level)
    except (TypeError, ValueError) as exc:
        raise PruneflowError(f"layer '{layer}': level {level!r} is not an integer") from exc
    if as_int != level:
        raise PruneflowError(f"layer '{layer}': level {level!r} is not an integer")
    return as_int


def _same_grid(a: Sequence[float], b: Sequence[float]) -> bool:
    if len(a) != len(b):
        return False
    return all(math.isclose(x, y, abs_tol=1e-9) for x, y in zip(a, b, strict=True))


def _fmt(grid: list[float]) -> str:
    shown = ", ".join(f"{s:.4f}" for s in grid[:3])
    return f"{shown}, ..." if len(grid) > 3 else shown
