"""The structured timing table: measured time of every group's physically thinned layers.

For channel group ``g`` at width level ``s`` the table holds the time of the layers charged to
``g`` (:meth:`pruneflow.structured.widths.Wiring.charged`: the convs producing its channels
with their BatchNorm and ReLU, and a classifier reading it), rebuilt at their thinned shapes
and run with dense torch kernels on inputs of the shapes they see in the model.

Chain model. A conv's cost depends on its input and its output width, so the time is not a
sum over groups. Each layer is charged to the later (in forward order) of its input and
output group, and the table holds ``t[g, p, s]``: group ``g``'s charged layers at level ``s``
while the previous group ``g - 1`` is at level ``p``. SPDY's DP with the previous level in its
state (:class:`pruneflow.spdy.dp.ChainDPSolver`) then solves chains of convs exactly. Every
``(p, s)`` pair of every group is measured in one of ``|S|^2`` thinned models: in model
``(p, s)`` the even groups sit at level ``p`` and the odd ones at ``s``, so each group sees
each pair once. Residual joins: a layer whose other group is not the previous one (a
shortcut projection, the first conv of a stage reading the stage before's sum) is measured
with that group at the level of the group of the same parity (its own level or the previous
group's): exact where those levels agree, an approximation elsewhere, which
``bench/structured_additivity.py`` checks against measured end-to-end times of random
profiles (figures in docs/structured.md).

Timing in situ (as :mod:`pruneflow.timing.insitu` does for sparse layers): each group's
layers (convs, their BatchNorms, the classifier) are timed by forward hooks inside whole
forward passes of the thinned model, so each is charged its real cache behaviour; alone in a
loop, smallcnn's thinned layers were predicted up to 1.4x slower than the models measured.
The rest of a model (ReLUs, sums, pooling, call overhead) shrinks with it, down to a fixed
part: the smallest rest of all measured models is the fixed remainder, and the rest above it is
charged to each model's groups in proportion to their times there (never a negative entry, and
every uniformly thinned model is predicted as measured).

Measurement discipline (:mod:`pruneflow.timing.measure`, :mod:`pruneflow.timing.smooth`): one
thread by default (thread CPU time, so a busy host's descheduling does not count), ``rounds``
sweeps over the levels in a new random order each, every entry the ``quantile`` of its runs
pooled over the rounds; entries of one physical configuration (levels repeating a width)
pooled (:func:`pool_same_widths`), then a local linear fit over neighbouring widths made
non-increasing as the width falls.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pruneflow.chex.groups import ChannelGroup, trace
from pruneflow.config import StructuredTimingParams
from pruneflow.errors import PruneflowError
from pruneflow.io import parquet_metadata, read_parquet, write_parquet
from pruneflow.structured.widths import Wiring, thin_copy
from pruneflow.timing.measure import Timing, measure, thread_scope
from pruneflow.timing.smooth import smooth_level_times
from pruneflow.timing.table import host_description

__all__ = [
    "COLUMNS",
    "FORMAT",
    "StructuredTable",
    "measure_table",
    "pool_same_widths",
    "read_table",
    "write_table",
]

FORMAT = "pruneflow.structured.timing/1"
COLUMNS: dict[str, str] = {
    "group": "O",
    "group_index": "iu",
    "prev_level": "iu",
    "level": "iu",
    "fraction": "f",
    "channels": "iu",
    "time_ms": "f",
    "time_ms_raw": "f",
    "time_ms_p10": "f",
    "time_ms_p90": "f",
    "repeats": "iu",
}


class StructuredTable:
    """The table as arrays: ``times_ms`` [groups, levels, levels] (``[g, p, s]``: group ``g``
    at level ``s`` after group ``g - 1`` at level ``p``; smoothed) and its metadata."""

    def __init__(self, frame: pd.DataFrame, meta: Mapping[str, Any]):
        self.frame = frame
        self.meta = dict(meta)
        n_groups, n_levels = len(meta["groups"]), len(meta["levels"])
        ordered = frame.sort_values(["group_index", "prev_level", "level"])
        self.times_ms = (
            ordered["time_ms"].to_numpy(np.float64).reshape(n_groups, n_levels, n_levels)
        )
        own = frame[frame["prev_level"] == 0].sort_values(["group_index", "level"])
        self.widths = own["channels"].to_numpy(np.int64).reshape(n_groups, n_levels)

    @property
    def groups(self) -> list[str]:
        return list(self.meta["groups"])

    @property
    def dense_total_ms(self) -> float:
        return float(self.meta["dense_total_ms"])

    @property
    def remainder_ms(self) -> float:
        return float(self.meta["remainder_ms"])

    def predict_ms(self, levels: Sequence[int]) -> float:
        """``remainder + sum_g t[g, levels[g - 1], levels[g]]``."""
        lv = np.asarray(levels, dtype=np.int64)
        prev = np.concatenate([[0], lv[:-1]])
        return self.remainder_ms + float(self.times_ms[np.arange(len(lv)), prev, lv].sum())

    def predict_speedup(self, levels: Sequence[int]) -> float:
        """The table's speedup of profile ``levels`` over the dense model."""
        return self.dense_total_ms / self.predict_ms(levels)

    def fastest_ms(self) -> float:
        """The predicted time of the fastest profile (the chain's minimum)."""
        t = self.times_ms
        best = np.zeros(t.shape[1])
        for g in range(t.shape[0] - 1, 0, -1):
            best = (t[g] + best[None, :]).min(axis=1)
        return self.remainder_ms + float((t[0, 0] + best).min())

    def max_speedup(self) -> float:
        return self.dense_total_ms / self.fastest_ms()


def _bn_after(model: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """conv name -> the name of the BatchNorm right after it."""
    graph = trace(model, example)
    names = {m: n for n, m in model.named_modules()}
    out: dict[str, str] = {}
    for module, node in graph.module2node.items():
        if isinstance(module, nn.Conv2d) and module in names:
            for o in node.outputs:
                if isinstance(o.module, nn.BatchNorm2d) and o.module in names:
                    out[names[module]] = names[o.module]
    return out


class _Slots:
    """Forward hooks that add each charged module's duration to its group's account."""

    def __init__(self, model: nn.Module, charged: Mapping[str, str], groups: Sequence[str]):
        # every group has an account: one whose layers are all charged to a neighbour (the
        # first in chain order, say) costs nothing of its own
        self.acc: dict[str, int] = dict.fromkeys(groups, 0)
        self._t0: dict[str, int] = {}
        self._clock = time.thread_time_ns
        modules = dict(model.named_modules())
        self._hooks = []
        for name, group in charged.items():
            m = modules[name]
            self._hooks.append(m.register_forward_pre_hook(self._start(name)))
            self._hooks.append(m.register_forward_hook(self._stop(name, group)))

    def _start(self, name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: tuple) -> None:
            self._t0[name] = self._clock()

        return hook

    def _stop(self, name: str, group: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: tuple, _out: object) -> None:
            self.acc[group] += self._clock() - self._t0[name]

        return hook

    def reset(self) -> None:
        for g in self.acc:
            self.acc[g] = 0

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


def _slot_samples(
    model: nn.Module, x: torch.Tensor, slots: _Slots, cfg: StructuredTimingParams
) -> tuple[dict[str, list[float]], list[float]]:
    """Per group, its modules' summed time (ms) in each of up to ``max_repeats`` forward passes
    (at least ``min_repeats``; ``max_seconds`` of wall time otherwise), and each pass's total."""
    out: dict[str, list[float]] = {g: [] for g in slots.acc}
    totals: list[float] = []
    for _ in range(cfg.warmup):
        model(x)
    clock = time.thread_time_ns
    deadline = time.perf_counter() + cfg.max_seconds
    for i in range(cfg.max_repeats):
        slots.reset()
        t0 = clock()
        model(x)
        totals.append((clock() - t0) / 1e6)
        for g, ns in slots.acc.items():
            out[g].append(ns / 1e6)
        if i + 1 >= cfg.min_repeats and time.perf_counter() > deadline:
            break
    return out, totals


def pool_same_widths(times: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """``times`` [groups, levels, levels] with every set of entries that describe one physical
    configuration (the same own width after the same previous group's width) replaced by
    their mean.

    Levels repeat widths in small groups (8 channels at fractions 0.2 and 0.1 both keep 2, and
    ``structured.min_channels`` repeats the floor at every level below it). Measured apart,
    such entries are independent noisy draws of one model, and the DP, which minimizes, picks
    the luckiest: the repeated (thinnest) widths look cheaper than they are, and plans there
    over-promise their speedup.
    """
    out = times.copy()
    n_groups, n_levels = widths.shape
    for gi in range(n_groups):
        # group 0 has no previous group: its entries do not depend on the previous level
        prev = widths[gi - 1] if gi else np.zeros(n_levels, np.int64)
        for wp in np.unique(prev):
            rows = np.flatnonzero(prev == wp)
            for ws in np.unique(widths[gi]):
                cols = np.flatnonzero(widths[gi] == ws)
                block = np.ix_(rows, cols)
                out[gi][block] = times[gi][block].mean()
    return out


def _pair_profile(n_groups: int, p: int, s: int) -> list[int]:
    """Model ``(p, s)``: even groups at level ``p``, odd ones at ``s``."""
    return [p if g % 2 == 0 else s for g in range(n_groups)]


def measure_table(
    model: nn.Module,
    model_name: str,
    groups: Sequence[ChannelGroup],
    wiring: Wiring,
    widths: np.ndarray,
    grid: Sequence[float],
    in_shape: tuple[int, int, int],
    cfg: StructuredTimingParams,
    progress: Callable[[str, int, int], None] | None = None,
) -> StructuredTable:
    """Measure the structured timing table of ``model`` (see the module docstring)."""
    if cfg.threads != 1:
        raise PruneflowError(
            "structured timing runs in situ on thread CPU time: structured.timing.threads must "
            f"be 1, got {cfg.threads}"
        )
    names = [g.name for g in groups]
    sizes = {g.name: g.size for g in groups}
    n_groups, n_levels = widths.shape
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    x = torch.randn((cfg.batch_size, *in_shape), generator=gen)
    example = x[:1]
    model = model.eval()
    bns = _bn_after(model, example)
    charged: dict[str, str] = {}
    for layer in wiring.inputs:
        g = wiring.charged(layer)
        if g is not None:
            charged[layer] = g
            if layer in bns:
                charged[bns[layer]] = g
    pairs = [(p, s) for p in range(n_levels) for s in range(n_levels)]
    nets: dict[tuple[int, int], nn.Module] = {}
    # per model (p, s): every group's slot times, and the rest of the model
    rest_runs: dict[tuple[int, int], list[float]] = {pair: [] for pair in pairs}
    slot_runs: dict[tuple[int, int], dict[str, list[float]]] = {
        pair: {g: [] for g in names} for pair in pairs
    }
    dense: list[Timing] = []
    settings = dict(
        warmup=cfg.warmup,
        min_repeats=cfg.min_repeats,
        max_repeats=cfg.max_repeats,
        rel_tol=cfg.rel_tol,
        max_seconds=cfg.max_seconds,
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    with thread_scope(cfg.threads), torch.no_grad():
        for r in range(cfg.rounds):
            dense.append(measure(lambda: model(x), **settings))
            for i in rng.permutation(len(pairs)):
                pair = pairs[int(i)]
                levels = _pair_profile(n_groups, *pair)
                if pair not in nets:
                    keep = {
                        g: torch.arange(int(widths[gi, levels[gi]])) for gi, g in enumerate(names)
                    }
                    nets[pair] = thin_copy(model, groups, keep).eval()
                slots = _Slots(nets[pair], charged, names)
                try:
                    per_group, totals = _slot_samples(nets[pair], x, slots, cfg)
                finally:
                    slots.remove()
                for g, values in per_group.items():
                    slot_runs[pair][g] += values
                summed = np.sum([per_group[g] for g in names], axis=0)
                rest_runs[pair] += (np.asarray(totals) - summed).tolist()
            if progress is not None:
                progress(f"{model_name}: structured timing rounds", r + 1, cfg.rounds)
    q = cfg.quantile
    rest_q = {pr: float(np.quantile(rest_runs[pr], q)) for pr in pairs}
    slot_q = {pr: {g: Timing.of(slot_runs[pr][g]).quantile(q) for g in names} for pr in pairs}
    # the part of the rest no thinning removes (call overhead) is the fixed remainder; the
    # part above it goes to each model's groups in proportion to their times there
    rest_min = min(rest_q.values())
    growth = {pr: (rest_q[pr] - rest_min) / sum(slot_q[pr].values()) for pr in pairs}
    raw = np.zeros((n_groups, n_levels, n_levels))
    charged_ms = np.zeros_like(raw)
    spread = np.zeros((n_groups, n_levels, n_levels, 3))
    for gi, g in enumerate(names):
        for prev in range(n_levels):
            for own in range(n_levels):
                # the model that put group g at `own` after `prev` (group 0 has no previous
                # group: its runs at `own` are pooled over the models that hold it there)
                if gi == 0:
                    sources = [pr for pr in pairs if pr[0] == own]
                elif gi % 2 == 0:
                    sources = [(own, prev)]
                else:
                    sources = [(prev, own)]
                timing = Timing.of([v for pr in sources for v in slot_runs[pr][g]])
                raw[gi, prev, own] = timing.quantile(q)
                factor = 1.0 + float(np.mean([growth[pr] for pr in sources]))
                charged_ms[gi, prev, own] = raw[gi, prev, own] * factor
                spread[gi, prev, own] = (timing.p10_ms, timing.p90_ms, timing.repeats)
    charged_ms = pool_same_widths(charged_ms, widths)
    rows = []
    for gi, g in enumerate(names):
        levels_of: dict[int, list[int]] = {}
        for s in range(1, n_levels):
            levels_of.setdefault(int(widths[gi, s]), []).append(s)
        uniq = sorted(levels_of, reverse=True)
        for prev in range(n_levels):
            smooth = charged_ms[gi, prev].copy()
            # over distinct widths only (small groups repeat a width at several levels)
            if len(uniq) >= 2 and cfg.smooth_window > 1:
                per = [float(charged_ms[gi, prev, levels_of[w]].mean()) for w in uniq]
                sparsity = [1.0 - w / sizes[g] for w in uniq]
                fitted = smooth_level_times(sparsity, per, cfg.smooth_window)
                for w, value in zip(uniq, fitted, strict=True):
                    smooth[levels_of[w]] = value
            for s in range(n_levels):
                p10, p90, repeats = spread[gi, prev, s]
                rows.append(
                    {
                        "group": g,
                        "group_index": gi,
                        "prev_level": prev,
                        "level": s,
                        "fraction": float(grid[s]),
                        "channels": int(widths[gi, s]),
                        "time_ms": float(max(smooth[s], 1e-6)),
                        "time_ms_raw": float(raw[gi, prev, s]),
                        "time_ms_p10": float(p10),
                        "time_ms_p90": float(p90),
                        "repeats": int(repeats),
                    }
                )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    # The dense model's time in the same in-situ runs as every entry (its slots plus its rest):
    # a separate hook-free measurement, taken minutes apart on a shared host, could even come
    # out below the sum of its own layers' times. The hook-free figure is kept for reference.
    prunable = float(charged_ms[np.arange(n_groups), 0, 0].sum())
    dense_ms = prunable + rest_min
    meta = {
        "format": FORMAT,
        "model": model_name,
        "groups": names,
        "sizes": [sizes[g] for g in names],
        "levels": [float(f) for f in grid],
        "batch_size": cfg.batch_size,
        "threads": cfg.threads,
        "device": "cpu",
        "host": host_description(cfg.threads),
        "quantile": q,
        "rounds": cfg.rounds,
        "smooth_window": cfg.smooth_window,
        "dense_total_ms": float(dense_ms),
        "dense_unhooked_ms": float(Timing.pooled(dense).quantile(q)),
        "prunable_dense_ms": prunable,
        "remainder_ms": float(rest_min),
        "seconds": time.perf_counter() - start,
        # CPU time: what the profiling costs on a quiet host (the wall time above grows with
        # the load of a shared one)
        "cpu_seconds": time.process_time() - cpu_start,
    }
    return StructuredTable(frame, meta)


def write_table(path: str | os.PathLike[str], table: StructuredTable) -> Path:
    return write_parquet(path, table.frame[list(COLUMNS)], table.meta)


def read_table(
    path: str | os.PathLike[str],
    model_name: str,
    groups: Sequence[str],
    host: Mapping[str, Any] | None = None,
) -> StructuredTable:
    """Read a structured timing table measured for ``model_name``'s ``groups`` (and ``host``:
    keys of :func:`pruneflow.timing.table.host_description` that must match)."""
    frame = read_parquet(path, COLUMNS)
    meta = parquet_metadata(path)
    if meta.get("format") != FORMAT:
        raise PruneflowError(
            f"{path} is not a structured timing table (format {meta.get('format')!r})"
        )
    if meta.get("model") != model_name or list(meta.get("groups", [])) != list(groups):
        raise PruneflowError(
            f"{path} was measured for {meta.get('model')} groups {meta.get('groups')}, not "
            f"{model_name} groups {list(groups)}"
        )
    if host is not None:
        recorded = meta.get("host", {})
        diff = [
            f"{k}: table {recorded.get(k)!r} vs here {v!r}"
            for k, v in host.items()
            if recorded.get(k) != v
        ]
        if diff:
            raise PruneflowError(
                f"{path} was measured on another host ({'; '.join(diff)}): its times do not hold "
                "here; profile this host again"
            )
    n = len(meta["levels"])
    if (
        len(frame) != len(groups) * n * n
        or frame.duplicated(["group", "prev_level", "level"]).any()
    ):
        raise PruneflowError(
            f"{path}: expected one row per group, previous level and level "
            f"({len(groups)} x {n} x {n})"
        )
    if not np.isfinite(frame["time_ms"]).all() or (frame["time_ms"] <= 0).any():
        raise PruneflowError(f"{path}: time_ms must be finite and > 0")
    return StructuredTable(frame, meta)
