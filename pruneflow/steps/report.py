"""Step ``report``: ``artifacts/reports/report.md`` and ``report.html`` from the tables.

Its inputs are the tables the report reads that exist when it runs (a method not run yet is
reported as such, not an error), so the report is rebuilt exactly when one of them changed or
a new one appeared. ``pruneflow report`` builds the same report directly, without the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pruneflow import config, layout
from pruneflow.chex import paths as chex_paths
from pruneflow.claims import claims_metrics, claims_rows
from pruneflow.config import Params
from pruneflow.io import write_json
from pruneflow.report import build_report
from pruneflow.report.build import FIGURES
from pruneflow.report.claims import NO_CLAIMS, all_claims, claims_file
from pruneflow.sdd.paths import lottery_file, phases_file, sweep_file
from pruneflow.spdy.paths import (
    oneshot_file,
    profile_file,
    profiles_file,
    results_file,
    search_file,
)
from pruneflow.steps.base import Step
from pruneflow.structured import paths as structured_paths

# the report describes every section of params in its header
SECTIONS = (
    "preset",
    "claims",
    "runtime",
    "data",
    "noise",
    "model",
    "train",
    "spdy",
    "sdd",
    "chex",
    "paths",
)


def report_tables(params: Params) -> list[Path]:
    """Every table the report can read for ``params``, present or not."""
    tables: list[Path] = []
    for model in params.spdy.models:
        p = config.scoped(params, f"spdy:{model}")
        tables += [layout.timing_table(p), oneshot_file(p), profiles_file(p), results_file(p)]
        tables += [f for t in p.spdy.targets for f in (profile_file(p, t), search_file(p, t))]
    for model in params.sdd.models:
        p = config.scoped(params, f"sdd:{model}")
        tables += [sweep_file(p), phases_file(p), lottery_file(p)]
    for model in params.chex.models:
        p = config.scoped(params, f"chex:{model}")
        tables += [
            chex_paths.comparison_table(p),
            chex_paths.exploration_table(p),
            chex_paths.ablation_table(p),
        ]
    for model in params.structured.models:
        p = config.scoped(params, f"structured:{model}")
        tables += [structured_paths.plans_table(p), structured_paths.results_table(p)]
    return tables


def _outputs(p: Params) -> list[Path]:
    out = layout.reports_dir(p)
    return [out / "report.md", out / "report.html", out / FIGURES, claims_file(p)]


def _compute(p: Params) -> dict[str, Any]:
    paths = build_report(p)
    claims = all_claims(p)
    write_json(claims_file(p), claims_metrics(claims))
    present = [t for t in report_tables(p) if t.exists()]
    return {
        "markdown": str(paths.markdown),
        "html": str(paths.html),
        "tables": len(present),
        "claims": claims_rows(claims),
        "claims_note": None if p.claims else NO_CLAIMS,
    }


REPORT = Step(
    name="report",
    reads=SECTIONS,
    inputs=lambda p: [t for t in report_tables(p) if t.exists()],
    outputs=_outputs,
    compute=_compute,
    description="report.md and a self-contained report.html from the pipeline's tables",
)
