"""Where every artifact lives, as a function of params (one place, so nothing guesses paths).

Models are keyed by data set and architecture (``models/<dataset>/<model>/``) rather than by
architecture alone, so the SPDY, double-descent and CHEX pipelines can train the same
architecture on different data without overwriting each other.
"""

from __future__ import annotations

from pathlib import Path

from pruneflow.config import Params


def artifacts(p: Params) -> Path:
    return Path(p.paths.artifacts)


def data_dir(p: Params) -> Path:
    return artifacts(p) / "data" / p.data.dataset


def labels_table(p: Params) -> Path:
    """Keyed by the noise too: SPDY (clean) and double descent (20% noise) share mnist5k."""
    return data_dir(p) / f"{p.noise.kind}-{p.noise.rate}" / "labels.parquet"


def model_dir(p: Params) -> Path:
    return artifacts(p) / "models" / p.data.dataset / p.model.name


def dense_checkpoint(p: Params) -> Path:
    return model_dir(p) / "dense.safetensors"


def metrics_file(p: Params, step: str) -> Path:
    """DVC metrics of a step, one file per (data set, model) so methods never overwrite them."""
    return Path(p.paths.metrics) / step / f"{p.data.dataset}-{p.model.name}.json"


def timing_table(p: Params) -> Path:
    """The layer-time table of the model on this host's CPU backends."""
    return artifacts(p) / "timing" / p.data.dataset / p.model.name / "cpu.parquet"
