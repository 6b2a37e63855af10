"""Where SPDY's tables and figures live, and their columns (name -> pandas ``dtype.kind``
letters, as :func:`pruneflow.io.read_parquet` checks them).

The steps that write them (:mod:`pruneflow.steps.spdy`, :mod:`pruneflow.steps.spdy_gmp`) and
the report that reads them (:mod:`pruneflow.report.schemas`) both take them from here. ``p`` is
the SPDY view of one model, ``config.scoped(params, "spdy:MODEL")``; the folders come from
:mod:`pruneflow.layout`.
"""

from __future__ import annotations

from pathlib import Path

from pruneflow import layout
from pruneflow.config import Params

PROFILE_COLUMNS = {"layer": "O", "level": "iu", "sparsity": "f", "time_ms": "f", "error_score": "f"}
SEARCH_COLUMNS = {
    "eval": "iu",
    "phase": "O",
    "d": "iu",
    "calib_loss": "f",
    "pred_time_ms": "f",
    "best": "f",
    "new_profile": "b",
    "improved": "b",
}
ONESHOT_COLUMNS = {
    "model": "O",
    "target": "f",
    "profile": "O",
    "calib_loss": "f",
    "test_acc": "f",
    "predicted_speedup": "f",
    "aim": "f",
    "measured_speedup": "f",
    "dp_calls": "iu",
    "profiles_scored": "iu",
    "seed": "iu",
}
PROFILES_COLUMNS = {
    "target": "f",
    "profile": "O",
    "layer": "O",
    "level": "iu",
    "sparsity": "f",
}
RESULTS_COLUMNS = {
    "model": "O",
    "target": "f",
    "profile": "O",
    "dense_acc": "f",
    "acc": "f",
    "predicted_speedup": "f",
    "measured_speedup": "f",
    "seed": "iu",
}


def profile_file(p: Params, target: float) -> Path:
    return layout.spdy_target_dir(p, target) / "profile.parquet"


def search_file(p: Params, target: float) -> Path:
    return layout.spdy_target_dir(p, target) / "search.parquet"


def oneshot_file(p: Params) -> Path:
    return layout.spdy_dir(p) / "oneshot.parquet"


def profiles_file(p: Params) -> Path:
    return layout.spdy_dir(p) / "profiles.parquet"


def figure_files(p: Params) -> dict[str, Path]:
    stem = layout.reports_dir(p) / f"spdy-{layout.model_key(p)}"
    return {"search": Path(f"{stem}-search.png"), "profiles": Path(f"{stem}-profiles.png")}


def results_file(p: Params) -> Path:
    return layout.spdy_dir(p) / "results.parquet"


def results_markdown(p: Params) -> Path:
    return layout.spdy_dir(p) / "results.md"
