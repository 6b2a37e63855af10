"""The structured section: per model and target, the searched widths' predicted and measured
speedup and the thinned model's accuracy before and after fine-tuning
(``artifacts/structured/<dataset>-<model>/results.parquet``, :mod:`pruneflow.structured.paths`),
and the comparison with uniform, FLOPs- and MACs-budgeted profiles at equal measured latency
(``comparison.parquet``).
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
from pruneflow.stats import Estimate
from pruneflow.structured import paths
from pruneflow.structured.comparison import read_comparison

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


METHOD_NAMES = {
    "search": "this search (measured latency)",
    "uniform": "uniform widths",
    "chex_realloc": "CHEX BN-scale re-allocation (FLOPs)",
    "tp_magnitude": "Torch-Pruning global magnitude (MACs)",
}


def _comparison(sec: Section, p: Params, model: str) -> None:
    runs, summary = read_comparison(p)
    meta = parquet_metadata(paths.comparison_table(p))
    rows = []
    for r in summary.sort_values("target", kind="stable").itertuples():
        acc = Estimate(int(r.n), r.test_acc_mean, r.test_acc_low, r.test_acc_high)
        diff = (
            "-"
            if r.method == "search" or r.diff_vs_search != r.diff_vs_search
            else Estimate(int(r.n), r.diff_vs_search, r.diff_low, r.diff_high).format(
                100, signed=True
            )
        )
        rows.append(
            [
                fmt.target(r.target),
                METHOD_NAMES.get(r.method, r.method),
                str(int(r.n)),
                acc.format(100),
                diff,
                f"{fmt.speedup(r.predicted_speedup)} ({r.predictor})",
                fmt.speedup(r.measured_speedup),
                f"{r.measured_vs_target:.2f}",
            ]
        )
    low, high = meta.get("load_1min_range", [float("nan")] * 2)
    epochs = int(runs["finetune_epochs"].iloc[0])
    sec.blocks.append(
        Table(
            key=f"structured-compare-{model}",
            caption=f"{model}: profiles at equal measured latency, each fine-tuned "
            f"{epochs} epoch(s) alike",
            columns=[
                "target",
                "profile",
                "n",
                "test acc % [95%]",
                "vs search, points [95%] (paired by seed)",
                "predicted speedup (by)",
                "measured speedup (median)",
                "measured / target",
            ],
            rows=rows,
            note=f"test images: {meta.get('test_size')}; speedups measured end to end with "
            "plain torch, each fine-tuned model against the dense one in alternating passes; "
            f"host load (1 min) {low:.1f}-{high:.1f}",
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
        # the comparison is optional (its own steps): its absence does not make the section
        # partly run
        if paths.comparison_table(p).is_file() and sec.look(paths.comparison_table(p)):
            _comparison(sec, p, model)
        else:
            sec.blocks.append(
                Note(
                    "The comparison at equal measured latency was not run "
                    "(`pruneflow stage structured_compare_report`)."
                )
            )
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
