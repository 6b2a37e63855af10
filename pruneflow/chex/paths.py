"""Where CHEX's artifacts live (to move into ``pruneflow.layout`` when the steps are wired)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pruneflow import layout
from pruneflow.config import Params


def chex_dir(p: Params) -> Path:
    """``artifacts/chex/<dataset>-<model>``."""
    return layout.artifacts(p) / "chex" / f"{p.data.dataset}-{p.model.name}"


def masked_checkpoint(p: Params) -> Path:
    """The trained full-size model with masked channels zeroed (+ ``.json`` sidecar)."""
    return chex_dir(p) / "masked.safetensors"


def masks_file(p: Params) -> Path:
    return chex_dir(p) / "masks.safetensors"


def exploration_table(p: Params) -> Path:
    """Every prune/regrow step per channel group (counts, regrown, delta)."""
    return chex_dir(p) / "exploration.parquet"


def extracted_checkpoint(p: Params) -> Path:
    return chex_dir(p) / "extracted.safetensors"


def metrics_json(p: Params) -> Path:
    return chex_dir(p) / "metrics.json"


def run_record(p: Params, item: dict[str, Any]) -> Path:
    """One comparison run: ``compare/<method>[-<variant>]-<target>-s<seed>.json``."""
    method = "-".join(filter(None, (item["method"], item.get("variant"))))
    return chex_dir(p) / "compare" / f"{method}-{item['target']:g}-s{item['seed']}.json"


def ablation_table(p: Params) -> Path:
    return chex_dir(p) / "ablation.parquet"


def comparison_table(p: Params) -> Path:
    return chex_dir(p) / "comparison.parquet"


def report_figure(p: Params, kind: str) -> Path:
    """``artifacts/reports/chex-<dataset>-<model>-<kind>.png``."""
    return layout.artifacts(p) / "reports" / f"chex-{p.data.dataset}-{p.model.name}-{kind}.png"
