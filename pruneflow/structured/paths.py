"""Where the structured pipeline's artifacts live, and the schemas of its tables.

``artifacts/structured/<dataset>-<model>/``:

- ``dense.safetensors`` (+ ``.json`` sidecar): the dense model trained with ``structured.train``.
- ``timing.parquet``: the structured timing table (:data:`pruneflow.structured.timing.COLUMNS`,
  one row per group, previous group's level and level; metadata: host, threads, batch size,
  dense total, fixed remainder, grid).
- ``recondb/``: ``index.parquet`` (:data:`pruneflow.structured.database.INDEX_COLUMNS`) and
  ``<group>.safetensors`` (keep sets and refitted consumer weights per level).
- ``plans.parquet`` (:data:`PLAN_COLUMNS`, one row per target; metadata ``verify``: every
  measured attempt, :func:`pruneflow.structured.verify.attempt_rows`; ``finetuned``: every
  profile the short fine-tuning compared, with its search score and its loss after it) and
  ``search/history-<target>.parquet`` (:data:`pruneflow.spdy.search.HISTORY_COLUMNS`).
- ``realized/<target>.safetensors``: the thinned, fine-tuned model's weights (its metadata
  holds the kept channels per group); ``results.parquet`` (:data:`RESULT_COLUMNS`).
- ``metrics/structured/<dataset>-<model>.json``: the results as DVC metrics.
- ``compare/profiles/<method>-<target>.safetensors``: each compared profile's thinned model
  before fine-tuning (metadata: widths, budget); ``compare/profiles.parquet``
  (:data:`PROFILE_COLUMNS`, one row per method and target).
- ``compare/runs/<method>-<target>-s<seed>.json``: one fine-tuned run (:data:`RUN_KEYS`).
- ``export/<target>.onnx`` and ``dense.onnx``: the realized and the dense model as ONNX;
  ``export.parquet`` (:data:`EXPORT_COLUMNS`, one row per target; metadata: host, load).
- ``comparison.parquet`` (:data:`COMPARISON_COLUMNS`, one row per run; metadata: the summary
  per method and target, :data:`SUMMARY_COLUMNS`) and
  ``metrics/structured_compare/<dataset>-<model>.json``.
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
    "aim": "f",  # the speedup the DP aimed at for this profile (target, or re-aimed)
    "measured_speedup": "f",  # the realized profile against the dense model, before fine-tuning
    "calib_loss": "f",
    "dense_calib_loss": "f",
    # validation loss after the short fine-tuning (structured.search.finetune_top_k); nan: off
    "finetuned_loss": "f",
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


# One compared profile per method and target, before fine-tuning.
PROFILE_COLUMNS: dict[str, str] = {
    "method": "O",  # search | uniform | chex_realloc | tp_magnitude
    "target": "f",
    "widths": "O",  # JSON list: kept channels per group
    "budget": "f",  # the method's knob: uniform level, FLOPs fraction, pruning ratio (search: nan)
    "predictor": "O",  # what the method predicts its speed by: timing table | FLOPs | MACs
    "predicted_speedup": "f",  # by that predictor
    "table_speedup": "f",  # by the structured timing table (nan off the width grid)
    "flops_speedup": "f",  # dense FLOPs / thinned FLOPs
    "calibrated_speedup": "f",  # measured while choosing the budget
    "calibration_steps": "iu",  # models measured to choose it (0: none)
    "params": "iu",
    "test_acc_before": "f",  # before fine-tuning
}

# One fine-tuned run: the keys of its JSON record and the columns of comparison.parquet.
COMPARISON_COLUMNS: dict[str, str] = {
    "method": "O",
    "target": "f",
    "seed": "iu",
    "test_acc": "f",
    "test_acc_before": "f",
    "measured_speedup": "f",  # after fine-tuning, against the dense model, alternating
    "predicted_speedup": "f",
    "predictor": "O",
    "flops_speedup": "f",
    "params": "iu",
    "finetune_epochs": "iu",
    "finetune_lr": "f",
    "widths": "O",
    "test_size": "iu",  # test images each accuracy was measured on
    "load_1min": "f",  # the host's 1-minute load average while the speedup was measured
}
RUN_KEYS = tuple(COMPARISON_COLUMNS)

# Per method and target, over seeds (comparison.parquet's metadata and the report's table).
SUMMARY_COLUMNS: dict[str, str] = {
    "method": "O",
    "target": "f",
    "n": "iu",
    "test_acc_mean": "f",
    "test_acc_low": "f",  # 95% interval (pruneflow.stats.mean_interval)
    "test_acc_high": "f",
    "diff_vs_search": "f",  # paired by seed (pruneflow.stats.paired_by_seed); nan for search
    "diff_low": "f",
    "diff_high": "f",
    "predicted_speedup": "f",
    "predictor": "O",
    "measured_speedup": "f",  # median over the runs
    "measured_vs_target": "f",
}


# The realized models in onnxruntime (one row per target).
EXPORT_COLUMNS: dict[str, str] = {
    "target": "f",
    "opset": "iu",
    "check_samples": "iu",
    "max_abs_diff": "f",  # onnxruntime vs torch, the thinned model's logits
    "max_abs_diff_dense": "f",
    "agrees_with_torch": "f",  # share of check images with the same predicted class
    "ort_speedup": "f",  # dense ONNX over thinned ONNX in onnxruntime, alternating passes
    "torch_speedup": "f",  # the same two models in plain torch, measured beside it
    "batch_size": "iu",
    "threads": "iu",
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


def compare_dir(p: Params) -> Path:
    return structured_dir(p) / "compare"


def profile_model(p: Params, method: str, target: float) -> Path:
    return compare_dir(p) / "profiles" / f"{method}-{layout.target_name(target)}.safetensors"


def profiles_table(p: Params) -> Path:
    return compare_dir(p) / "profiles.parquet"


def run_record(p: Params, item: dict) -> Path:
    """``compare/runs/<method>-<target>-s<seed>.json``."""
    name = f"{item['method']}-{layout.target_name(item['target'])}-s{item['seed']}.json"
    return compare_dir(p) / "runs" / name


def comparison_table(p: Params) -> Path:
    return structured_dir(p) / "comparison.parquet"


def compare_metrics_json(p: Params) -> Path:
    return layout.metrics_file(p, "structured_compare")


def export_dir(p: Params) -> Path:
    return structured_dir(p) / "export"


def onnx_model(p: Params, target: float | None) -> Path:
    """``export/<target>.onnx``; ``None``: the dense model's ``dense.onnx`` (beside the folder,
    which DVC tracks as one output)."""
    if target is None:
        return structured_dir(p) / "dense.onnx"
    return export_dir(p) / f"{layout.target_name(target)}.onnx"


def export_table(p: Params) -> Path:
    return structured_dir(p) / "export.parquet"
