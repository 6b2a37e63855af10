"""Step ``profile``: time every prunable layer at every grid level on this host.

Runs on the hardware the model will be served on (in pipelines.yaml the profile flow gets its
own work pool). The step's fingerprint includes the host description (CPU model, cores, torch
and numba versions, threads), so a table measured on another machine is never a cache hit.
Layer times do not depend on trained weight values, only on shapes and sparsity, so this step
needs no trained model: it profiles a freshly built one on a batch of real training images.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pruneflow import layout
from pruneflow.config import Params
from pruneflow.models import build, prunable_layers
from pruneflow.runtime import progress_enabled, report_progress
from pruneflow.sparsity.grid import skipped_layers, sparsity_grid
from pruneflow.steps.base import Step
from pruneflow.steps.data import load_data, read_labels
from pruneflow.timing.profiler import (
    ProfileSettings,
    default_batch_size,
    profile_model,
    progress_calls,
)
from pruneflow.timing.table import host_description, write_timing_table


def grid_levels(p: Params) -> list[float]:
    g = p.spdy.grid
    return sparsity_grid(g.min_sparsity_for(p.model.name), g.max_sparsity, g.steps)


def settings(p: Params) -> ProfileSettings:
    t = p.spdy.timing
    return ProfileSettings(
        batch_size=t.batch_size,
        threads=t.threads,
        levels=grid_levels(p),
        skip_first_last=p.spdy.grid.skip_first_last,
        include=tuple(p.spdy.grid.include),
        exclude=tuple(p.spdy.grid.exclude),
        warmup=t.warmup,
        min_repeats=t.min_repeats,
        max_repeats=t.max_repeats,
        rel_tol=t.rel_tol,
        max_seconds=t.max_seconds,
        rounds=t.rounds,
        quantile=t.quantile,
        min_seconds=t.min_seconds,
        max_rounds=t.max_rounds,
        smooth_window=t.smooth_window,
        seed=t.seed,
    )


def _compute(p: Params) -> dict[str, Any]:
    frame, _ = read_labels(p)
    data = load_data(p)
    st = settings(p)
    batch = st.batch_size or default_batch_size(p.model.name)
    train = np.flatnonzero(frame["split"].to_numpy() == "train")[:batch]
    model = build(p.model.name, data.num_classes, data.in_shape).eval()
    names = prunable_layers(model)
    n_profiled = len(names) - len(
        skipped_layers(p.model.name, names, st.skip_first_last, st.include, st.exclude)
    )
    n_rows = progress_calls(n_profiled, len(st.levels), st.rounds)
    with Progress(
        TextColumn(f"[bold]profile {p.model.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[where]}"),
        TimeElapsedColumn(),
        disable=not progress_enabled(p.runtime.progress),
        transient=True,
    ) as bar:
        task = bar.add_task("profile", total=n_rows, where="")
        rows = itertools.count(1)

        def tick(layer: str, level: int, backend: str, time_ms: float) -> None:
            done = next(rows)
            total = max(n_rows, done)  # rounds added for min_seconds extend the bar
            where = f"{layer} level {level}: {time_ms:.3f} ms {backend}"
            bar.update(task, advance=1, total=total, where=where)
            report_progress(f"profile {p.model.name}", done, total)

        table, meta = profile_model(
            model, p.model.name, calib=data.images(train), settings=st, progress=tick
        )
    write_timing_table(layout.timing_table(p), table, meta)
    dense = table[table["level"] == 0].set_index("layer")["time_ms"]
    return {
        "model": p.model.name,
        "rows": len(table),
        "batch_size": int(meta["batch_size"]),
        "dense_total_ms": float(meta["dense_total_ms"]),
        "remainder_ms": float(meta["remainder_ms"]),
        "dense_layer_ms": {k: round(float(v), 4) for k, v in dense.items()},
    }


PROFILE = Step(
    name="profile",
    reads=(
        "data.dataset",
        "data.root",
        "data.image_size",
        "model.name",
        "spdy.grid",
        "spdy.timing",
    ),
    inputs=lambda p: [layout.labels_table(p)],
    outputs=lambda p: [layout.timing_table(p)],
    compute=_compute,
    description="time every prunable layer at every grid level on this host -> timing table",
    environment=lambda p: host_description(p.spdy.timing.threads),
)
