"""Where the structured pipeline's artifacts live, and the schemas of its tables.

``artifacts/structured/<dataset>-<model>/``:

- ``dense.safetensors`` (+ ``.json`` sidecar): the dense model trained with ``structured.train``.
- ``timing.parquet``: the structured timing table (:data:`pruneflow.structured.timing.COLUMNS`,
  one row per group, previous group's level and level; metadata: host, threads, batch size,
  dense total, fixed remainder, grid).
- ``recondb/``: ``index.parquet`` (:data:`pruneflow.structured.database.INDEX_COLUMNS`) and
  ``<group>.safetensors`` (keep sets and refitted consumer weights per level).
- ``plans.parquet`` (:data:`PLAN_COLUMNS`, one row per target) and
  ``search/history-<target>.parquet`` (:data:`pruneflow.spdy.search.HISTORY_COLUMNS`).
- ``realized/<target>.safetensors``: the thinned, fine-tuned model's weights (its metadata
  holds the kept channels per group); ``results.parquet`` (:data:`RESULT_COLUMNS`).
- ``metrics/structured/<dataset>-<model>.json``: the results as DVC metrics.
"""

from __future__ import annotations

from pathlib import Path

from pruneflow import layout
from pruneflow.config import Params

PLAN_COLUMNS: dict[str, str] = {
    "target": "f",
    "levels": "O",  # JSON list: width level per group
    "widths": "O",  # JSON list: kept channels per group
    "predicted_speedup": "f",
    "calib_loss": "f",
    "dense_calib_loss": "f",
    "candidates": "iu",
    "distinct_profiles": "iu",
}

RESULT_COLUMNS: dict[str, str] = {
    "target": "f",
    "predicted_speedup": "f",
    "measured_speedup": "f",
    "speedup_vs_target": "f",  # measured / target; the check is >= 0.95
    "params_dense": "iu",
    "params_thin": "iu",
    "test_acc_dense": "f",
    "test_acc_stitched": "f",  # before fine-tuning
    "test_acc": "f",  # after fine-tuning
    "finetune_epochs": "iu",
    "widths": "O",
}


def structured_dir(p: Params) -> Path:
    return layout.artifacts(p) / "structured" / f"{layout.dataset_key(p)}-{layout.model_key(p)}"


def dense_checkpoint(p: Params) -> Path:
    return structured_dir(p) / "dense.safetensors"


def timing_table(p: Params) -> Path:
    return structured_dir(p) / "timing.parquet"


def recondb_dir(p: Params) -> Path:
    return structured_dir(p) / "recondb"


def plans_table(p: Params) -> Path:
    return structured_dir(p) / "plans.parquet"


def history_table(p: Params, target: float) -> Path:
    return structured_dir(p) / "search" / f"history-{layout.target_name(target)}.parquet"


def realized_model(p: Params, target: float) -> Path:
    return structured_dir(p) / "realized" / f"{layout.target_name(target)}.safetensors"


def results_table(p: Params) -> Path:
    return structured_dir(p) / "results.parquet"


def metrics_json(p: Params) -> Path:
    return layout.metrics_file(p, "structured")
