"""Where every artifact lives, as a function of params (one place, so nothing guesses paths).

Models are keyed by data set and architecture (``models/<dataset>/<model>/``) rather than by
architecture alone, so the SPDY, double-descent and CHEX pipelines can train the same
architecture on different data without overwriting each other.
"""

from __future__ import annotations

from pathlib import Path

from pruneflow.config import Params
from pruneflow.models.sources import path_name


def model_key(p: Params) -> str:
    """The model's name as a path component (``torchvision:resnet18`` ->
    ``torchvision-resnet18``; zoo names unchanged)."""
    return path_name(p.model.name)


def dataset_key(p: Params) -> str:
    """The data set's name as a path component (an import path's ``:`` becomes ``-``)."""
    return path_name(p.data.dataset)


def artifacts(p: Params) -> Path:
    return Path(p.paths.artifacts)


def data_dir(p: Params) -> Path:
    return artifacts(p) / "data" / dataset_key(p)


def labels_table(p: Params) -> Path:
    """Keyed by the noise too: SPDY (clean) and double descent (20% noise) share mnist5k."""
    return data_dir(p) / f"{p.noise.kind}-{p.noise.rate}" / "labels.parquet"


def model_dir(p: Params) -> Path:
    return artifacts(p) / "models" / dataset_key(p) / model_key(p)


def dense_checkpoint(p: Params) -> Path:
    return model_dir(p) / "dense.safetensors"


def metrics_file(p: Params, step: str) -> Path:
    """DVC metrics of a step, one file per (data set, model) so methods never overwrite them."""
    return Path(p.paths.metrics) / step / f"{dataset_key(p)}-{model_key(p)}.json"


def timing_table(p: Params) -> Path:
    """The layer-time table of the model on this host's CPU backends."""
    return artifacts(p) / "timing" / dataset_key(p) / model_key(p) / "cpu.parquet"


def recondb_dir(p: Params) -> Path:
    """The reconstruction database: ``index.parquet`` and ``layers/<layer>.safetensors``."""
    return artifacts(p) / "recondb" / model_key(p)


def spdy_dir(p: Params) -> Path:
    """SPDY's results for one model: one-shot and gradual-pruning tables, one folder per target."""
    return artifacts(p) / "spdy" / model_key(p)


def target_name(target: float) -> str:
    """``2.0 -> "2.0x"``: the folder of one speedup target (spelled as DVC spells the float, so
    a DVC matrix stage can name it)."""
    return f"{float(target)}x"


def spdy_target_dir(p: Params, target: float) -> Path:
    """One target's search: under ``targets/`` so that the one-shot stage can depend on all
    targets' folders at once while its own outputs sit beside them."""
    return spdy_dir(p) / "targets" / target_name(target)


def reports_dir(p: Params) -> Path:
    return artifacts(p) / "reports"


def export_dir(p: Params, method: str, run: str) -> Path:
    """One exported model: ``export/<dataset>/<model>/<method>[-<run>]/``."""
    name = f"{method}-{run}" if run else method
    return artifacts(p) / "export" / dataset_key(p) / model_key(p) / name
