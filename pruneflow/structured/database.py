"""The structured reconstruction database: per group and width, the channels kept and the
least-squares refit of every layer that reads them.

Which channels: the ``k`` with the largest L1 norm of their filters summed over the group's
producing convs, or CHEX's column subset selection (:func:`pruneflow.chex.css.css_select`) over
the producers' stacked filters, one column per channel.

Refit (ThiNet/CHEX-style layer-wise reconstruction, in the spirit of SPDY's layer-wise
database): a consumer ``W`` (a conv's input channels, a linear's inputs after a flatten) sees
the dense model's input ``X`` on calibration images. With only the kept input columns ``X_k``
its weights become ``argmin ||X W^T - X_k W_k^T||^2 + lambda ||W_k||^2`` (ridge: ``damp`` times
the mean diagonal of ``X_k^T X_k``), solved in float64; the dropped columns are zero. A
consumer with more kept columns than ``max_columns`` or than half its calibration rows keeps
its weights with the dropped columns zeroed: the refit would be too costly or would fit the
calibration images rather than the layer.

Layout of ``<dir>`` (like the unstructured database, :mod:`pruneflow.recon.database`):
``<group>.safetensors`` with ``level_XXX.keep`` (int64 channel numbers) and
``level_XXX.<consumer>`` (the consumer's refitted weight in its dense shape); ``index.parquet``
with :data:`INDEX_COLUMNS`, one row per (group, level, consumer), written last.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pruneflow.chex.css import css_select
from pruneflow.chex.groups import ChannelGroup
from pruneflow.config import StructuredReconParams
from pruneflow.errors import PruneflowError
from pruneflow.io import load_tensors, parquet_metadata, read_parquet, save_tensors, write_parquet

__all__ = ["FORMAT", "INDEX_COLUMNS", "StructuredDB", "build_database", "keep_channels"]

FORMAT = "pruneflow.structured.recon/1"
INDEX_NAME = "index.parquet"
INDEX_COLUMNS: dict[str, str] = {
    "group": "O",
    "level": "iu",
    "channels": "iu",
    "consumer": "O",
    "refit": "b",
    "rel_error": "f",
    "file": "O",
    "key": "O",
}


def _key(level: int, what: str) -> str:
    return f"level_{level:03d}.{what}"


def _producer_slices(group: ChannelGroup, modules: Mapping[str, nn.Module]):  # noqa: ANN202
    return [
        s
        for s in group.slices
        if s.zero and s.attr == "weight" and s.dim == 0 and isinstance(modules[s.module], nn.Conv2d)
    ]


def keep_channels(
    group: ChannelGroup, modules: Mapping[str, nn.Module], k: int, importance: str
) -> torch.Tensor:
    """The ``k`` channel numbers (sorted) group ``group`` keeps by ``importance``."""
    if importance not in ("l1", "css"):
        raise PruneflowError(f"channel importance must be 'l1' or 'css', got {importance!r}")
    if k >= group.size:
        return torch.arange(group.size)
    if importance == "l1":
        score = torch.zeros(group.size, dtype=torch.float64)
        for s in _producer_slices(group, modules):
            w = modules[s.module].weight.detach().index_select(0, s.idx)
            score.index_add_(0, s.root, w.abs().flatten(1).sum(1).double())
        order = torch.argsort(score, descending=True, stable=True)[:k]
        return order.sort().values
    blocks = []
    for s in _producer_slices(group, modules):
        w = modules[s.module].weight.detach().index_select(0, s.idx).flatten(1).double()
        block = torch.zeros(w.shape[1], group.size, dtype=torch.float64)
        block[:, s.root] = w.T
        blocks.append(block)
    return css_select(torch.cat(blocks), k)


def _consumer_slices(group: ChannelGroup, modules: Mapping[str, nn.Module]):  # noqa: ANN202
    return [
        s
        for s in group.slices
        if s.attr == "weight"
        and s.dim == 1
        and isinstance(modules[s.module], (nn.Conv2d, nn.Linear))
    ]


def _capture(
    model: nn.Module,
    consumers: Sequence[str],
    batches: Iterable[torch.Tensor],
    rows: int,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Every consumer's input as a matrix (conv: unfolded patches), ``rows`` rows sampled."""
    modules = dict(model.named_modules())
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in consumers}

    def hook_for(name: str) -> Callable[..., None]:
        layer = modules[name]

        def hook(_m: nn.Module, args: tuple, _out: object) -> None:
            x = args[0].detach()
            if isinstance(layer, nn.Conv2d):
                cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
                x = cols.transpose(1, 2).reshape(-1, cols.shape[1])
            seen[name].append(x.reshape(x.shape[0], -1).float())

        return hook

    hooks = [modules[n].register_forward_hook(hook_for(n)) for n in consumers]
    try:
        with torch.no_grad():
            model.eval()
            for x in batches:
                model(x)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, parts in seen.items():
        full = torch.cat(parts)
        if full.shape[0] > rows:
            full = full[torch.randperm(full.shape[0], generator=gen)[:rows]]
        out[name] = full.double()
    return out


def _kept_columns(layer: nn.Module, positions: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        kk = int(np.prod(layer.kernel_size))
        return (positions[:, None] * kk + torch.arange(kk)[None, :]).flatten()
    return positions


def _refit(
    layer: nn.Module, x: torch.Tensor, positions: torch.Tensor, cfg: StructuredReconParams
) -> tuple[torch.Tensor, bool, float]:
    """(weight with dropped inputs zeroed / refitted, whether refitted, relative error)."""
    w = layer.weight.detach()
    flat = w.reshape(w.shape[0], -1).double()
    cols = _kept_columns(layer, positions)
    y = x @ flat.T
    xk = x[:, cols]
    dropped = cols.numel() < flat.shape[1]
    fit = dropped and cols.numel() <= cfg.max_columns and 2 * cols.numel() <= x.shape[0]
    if fit:
        gram = xk.T @ xk
        lam = cfg.damp * float(gram.diagonal().mean().clamp_min(1e-12))
        gram.diagonal().add_(lam)
        wk = torch.linalg.solve(gram, xk.T @ y).T
    else:
        wk = flat[:, cols]
    err = float(((y - xk @ wk.T) ** 2).sum() / (y**2).sum().clamp_min(1e-30))
    new = torch.zeros_like(flat)
    new[:, cols] = wk
    return new.reshape(w.shape).to(w.dtype), fit, err


def build_database(
    root: str | os.PathLike[str],
    model: nn.Module,
    model_name: str,
    groups: Sequence[ChannelGroup],
    widths: np.ndarray,
    grid: Sequence[float],
    batches: Iterable[torch.Tensor],
    cfg: StructuredReconParams,
    progress: Callable[[str, int, int], None] | None = None,
) -> StructuredDB:
    """Build and write the database to ``root`` (index last), and open it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    modules = dict(model.named_modules())
    gen = torch.Generator().manual_seed(cfg.calib_seed)
    consumers = sorted({s.module for g in groups for s in _consumer_slices(g, modules)})
    inputs = _capture(model, consumers, batches, cfg.rows, gen)
    rows = []
    for gi, g in enumerate(groups):
        tensors: dict[str, torch.Tensor] = {}
        file = f"{g.name}.safetensors"
        for level in range(widths.shape[1]):
            k = int(widths[gi, level])
            keep = keep_channels(g, modules, k, cfg.importance)
            tensors[_key(level, "keep")] = keep.to(torch.int64)
            for s in _consumer_slices(g, modules):
                positions = s.idx[torch.isin(s.root, keep)]
                weight, fit, err = _refit(modules[s.module], inputs[s.module], positions, cfg)
                key = _key(level, s.module)
                tensors[key] = weight
                rows.append(
                    {
                        "group": g.name,
                        "level": level,
                        "channels": k,
                        "consumer": s.module,
                        "refit": fit,
                        "rel_error": err,
                        "file": file,
                        "key": key,
                    }
                )
        save_tensors(root / file, tensors)
        if progress is not None:
            progress(f"{model_name}: structured database groups", gi + 1, len(groups))
    meta = {
        "format": FORMAT,
        "model": model_name,
        "groups": [g.name for g in groups],
        "levels": [float(f) for f in grid],
        "widths": widths.tolist(),
        "importance": cfg.importance,
    }
    write_parquet(root / INDEX_NAME, pd.DataFrame(rows, columns=list(INDEX_COLUMNS)), meta)
    return StructuredDB.open(root, model_name, [g.name for g in groups])


class StructuredDB:
    """An opened database: keep sets and consumer weights per (group, level)."""

    def __init__(self, root: Path, index: pd.DataFrame, meta: Mapping[str, Any]):
        self.root = root
        self.index = index
        self.meta = dict(meta)
        self._files: dict[str, dict[str, torch.Tensor]] = {}

    @classmethod
    def open(
        cls, root: str | os.PathLike[str], model_name: str, groups: Sequence[str]
    ) -> StructuredDB:
        root = Path(root)
        index = read_parquet(root / INDEX_NAME, INDEX_COLUMNS)
        meta = parquet_metadata(root / INDEX_NAME)
        if meta.get("format") != FORMAT:
            raise PruneflowError(f"{root} is not a structured reconstruction database")
        if meta.get("model") != model_name or list(meta.get("groups", [])) != list(groups):
            raise PruneflowError(
                f"{root} holds {meta.get('model')} groups {meta.get('groups')}, not "
                f"{model_name} groups {list(groups)}"
            )
        return cls(root, index, meta)

    @property
    def groups(self) -> list[str]:
        return list(self.meta["groups"])

    def _tensors(self, group: str) -> dict[str, torch.Tensor]:
        if group not in self._files:
            self._files[group] = load_tensors(self.root / f"{group}.safetensors")
        return self._files[group]

    def keep(self, group: str, level: int) -> torch.Tensor:
        return self._tensors(group)[_key(level, "keep")]

    def consumers(self, group: str, level: int) -> dict[str, torch.Tensor]:
        rows = self.index[(self.index["group"] == group) & (self.index["level"] == level)]
        t = self._tensors(group)
        return {r.consumer: t[r.key] for r in rows.itertuples()}

    def masks(self, sizes: Mapping[str, int], levels: Sequence[int]) -> dict[str, torch.Tensor]:
        """Per group, True for the channels the profile ``levels`` keeps."""
        out = {}
        for g, level in zip(self.groups, levels, strict=True):
            mask = torch.zeros(sizes[g], dtype=torch.bool)
            mask[self.keep(g, int(level))] = True
            out[g] = mask
        return out

    @torch.no_grad()
    def stitch(
        self, model: nn.Module, groups: Sequence[ChannelGroup], levels: Sequence[int]
    ) -> nn.Module:
        """``model`` (in place) at the profile: consumers refitted, dropped channels zeroed.

        ``model`` must hold the dense weights: every consumer of a group is overwritten and
        the producers' dropped channels (filters, biases, BN scales and shifts) set to zero,
        so they output exactly zero and the function is that of the thinned model.
        """
        if len(levels) != len(groups):
            raise PruneflowError(f"profile has {len(levels)} levels for {len(groups)} groups")
        modules = dict(model.named_modules())
        for g, level in zip(groups, levels, strict=True):
            for name, weight in self.consumers(g.name, int(level)).items():
                modules[name].weight.copy_(weight)
        masks = self.masks({g.name: g.size for g in groups}, levels)
        for g in groups:
            drop = ~masks[g.name]
            for s in g.slices:
                if s.zero:
                    tensor = getattr(modules[s.module], s.attr)
                    pos = s.idx[drop[s.root]]
                    tensor.index_fill_(s.dim, pos, 0.0)
        return model


def dense_copy(model: nn.Module) -> Callable[[], nn.Module]:
    """A function returning a fresh copy of ``model`` as it is now (for repeated stitching)."""
    frozen = copy.deepcopy(model)
    return lambda: copy.deepcopy(frozen)
