"""The structured section: per model and target, the searched widths' predicted and measured
speedup and the thinned model's accuracy before and after fine-tuning
(``artifacts/structured/<dataset>-<model>/results.parquet``, :mod:`pruneflow.structured.paths`).
"""

from __future__ import annotations

import json
from pathlib import Path

from pruneflow import config
from pruneflow.config import Params
from pruneflow.io import parquet_metadata, read_parquet
from pruneflow.report import fmt
from pruneflow.report.doc import Heading, Note, Table, Text
from pruneflow.report.section import Section
from pruneflow.structured import paths

RUN = "uv run pruneflow run structured --params presets/structured.yaml"
# the realized speedup must reach this share of the target (docs/structured.md)
SPEEDUP_SHARE = 0.95


def _results(sec: Section, p: Params, model: str) -> None:
    frame = read_parquet(paths.results_table(p), paths.RESULT_COLUMNS)
    groups = parquet_metadata(paths.plans_table(p)).get("groups", [])
    rows = []
    for r in frame.sort_values("target").itertuples():
        ok = "yes" if r.speedup_vs_target >= SPEEDUP_SHARE else "**no**"
        rows.append(
            [
                fmt.target(r.target),
                fmt.speedup(r.predicted_speedup),
                fmt.speedup(r.measured_speedup),
                ok,
                f"{r.params_thin / r.params_dense:.0%}",
                fmt.pct(r.test_acc_dense),
                fmt.pct(r.test_acc_stitched),
                fmt.pct(r.test_acc),
                ", ".join(str(w) for w in json.loads(r.widths)),
            ]
        )
    sec.blocks.append(
        Table(
            key=f"structured-{model}",
            caption=f"{model}: searched channel widths at each measured-latency target",
            columns=[
                "target",
                "predicted",
                "measured",
                f">= {SPEEDUP_SHARE:g}x target",
                "params",
                "dense acc",
                "thinned acc (no fine-tuning)",
                "thinned acc (fine-tuned)",
                "channels per group",
            ],
            rows=rows,
            note=f"groups in order: {', '.join(groups)}; speedups measured end to end with plain "
            "torch on this host, dense and thinned model alternating",
        )
    )


def structured_section(params: Params, figures: Path) -> Section:
    sec = Section("Structured profiles", "structured", RUN)
    for model in params.structured.models:
        p = config.scoped(params, f"structured:{model}")
        sec.blocks.append(Heading(f"{model} on {p.data.dataset}", 3, f"structured-{model}"))
        if sec.look(paths.results_table(p)) and paths.plans_table(p).is_file():
            _results(sec, p, model)
        else:
            sec.blocks.append(Note(f"Not produced yet. `{RUN}` makes it."))
    s = params.structured
    intro = Text(
        "SPDY's measure-then-solve over channel widths (Frantar & Alistarh, ICML 2022, applied "
        "to structured pruning): each channel group (channels meeting in a residual sum are one "
        f"group) gets {s.levels} width levels from 100% to {s.min_fraction:.0%}; every group's "
        "thinned layers are timed in situ on this host, the DP (with the previous group's width "
        "in its state) and SPDY's search choose widths under the latency budget, scored by "
        "calibration loss of the least-squares refit model, and the chosen widths become a "
        f"physically smaller model fine-tuned for {s.finetune_epochs} epochs. Details: "
        "docs/structured.md."
    )
    return sec.finish("Structured profiles: latency-constrained channel widths", intro)
