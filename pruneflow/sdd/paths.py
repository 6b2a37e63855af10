"""Where the sparse double descent sweep's files live, and its tables read against their
columns (:data:`pruneflow.sdd.sweep.SWEEP_COLUMNS`, :data:`~pruneflow.sdd.sweep.PHASE_COLUMNS`).

The steps that write them (:mod:`pruneflow.steps.sdd`) and the report that reads them
(:mod:`pruneflow.report.sdd`) both take them from here. ``p`` is the sdd view of one model,
``config.scoped(params, "sdd:MODEL")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pruneflow import layout
from pruneflow.config import Params
from pruneflow.io import parquet_metadata, read_json, read_parquet
from pruneflow.sdd import exports
from pruneflow.sdd.sweep import LEVEL_VALUES, PHASE_COLUMNS, SWEEP_COLUMNS

PLOT_NAMES = ("accuracy", "distance", "lottery")


def sweep_dir(p: Params) -> Path:
    return layout.artifacts(p) / "sdd" / f"{p.data.dataset}-{p.model.name}"


def dense_dir(p: Params) -> Path:
    return sweep_dir(p) / "dense"


def levels_dir(p: Params) -> Path:
    return sweep_dir(p) / "levels"


def dense_file(p: Params, seed: int) -> Path:
    return dense_dir(p) / f"seed{seed}.safetensors"


def level_file(p: Params, item: dict[str, Any]) -> Path:
    """Level ``item["level"]``'s checkpoint; level 0 is the seed's dense file."""
    if item["level"] == 0:
        return dense_file(p, item["seed"])
    chain = f"{item['method']}-{item['mode']}"
    return levels_dir(p) / f"seed{item['seed']}" / chain / f"level{item['level']:02d}.safetensors"


def record_file(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".json")


def sweep_file(p: Params) -> Path:
    return sweep_dir(p) / "sweep.parquet"


def phases_file(p: Params) -> Path:
    return sweep_dir(p) / "phases.parquet"


def lottery_file(p: Params) -> Path:
    return sweep_dir(p) / "lottery.parquet"


def plot_files(p: Params) -> dict[str, Path]:
    """The PNG figures (always all three, see the module docstring)."""
    stem = layout.artifacts(p) / "reports" / f"sdd-{p.data.dataset}-{p.model.name}"
    return {name: stem.with_name(f"{stem.name}-{name}.png") for name in PLOT_NAMES}


def curve_files(p: Params) -> dict[str, Path]:
    """The CSV exports DVC plots (:mod:`pruneflow.sdd.exports`)."""
    return {name: sweep_dir(p) / "curves" / f"{name}.csv" for name in exports.FILES}


def read_sweep(p: Params) -> tuple[Any, Any, dict[str, Any]]:
    """(sweep table, phases table, sweep metadata), schema- and range-checked."""
    table = read_parquet(sweep_file(p), SWEEP_COLUMNS)
    LEVEL_VALUES.check_frame(table, sweep_file(p))
    phases = read_parquet(phases_file(p), PHASE_COLUMNS)
    return table, phases, parquet_metadata(sweep_file(p))


def read_level_record(path: Path) -> dict[str, Any]:
    """A level's (or a dense run's) JSON record, its values range-checked."""
    record = read_json(path)
    LEVEL_VALUES.check_record(record, path)
    return record
