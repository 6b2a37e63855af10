"""The structured comparison at equal measured latency (run on ``structured:MODEL``).

* ``structured_compare_profiles``: per target, every method's thinned model before
  fine-tuning (:mod:`pruneflow.structured.baselines`: the search's plan, uniform widths, CHEX's
  BN-scale re-allocation, Torch-Pruning's global magnitude pruning; the last two bisected on
  their measured speedup) -> ``compare/profiles/`` and ``compare/profiles.parquet``.
* ``structured_compare`` (fan-out, one item per ``{method, target, seed}``): the profile
  fine-tuned alike (``structured.finetune_epochs``, ``finetune_lr``, the item's seed), its test
  accuracy and its measured end-to-end speedup -> ``compare/runs/*.json``.
* ``structured_compare_report``: ``comparison.parquet`` (one row per run) with the summary per
  method and target (n, mean and 95% interval, paired difference to the search) in its
  metadata, and the summary as DVC metrics.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch_pruning as tp
from torch import nn

from pruneflow import layout
from pruneflow.checkpoint import sidecar
from pruneflow.chex.flops import FlopsModel
from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.io import (
    load_tensors,
    read_parquet,
    save_tensors,
    write_json,
    write_parquet,
)
from pruneflow.runtime import report_progress
from pruneflow.steps.base import Step
from pruneflow.steps.structured import (
    _DATA,
    _GRID,
    _TRAIN,
    _dense_inputs,
    _finetune,
    _grid,
    _measured,
    _open,
)
from pruneflow.structured import paths
from pruneflow.structured.baselines import (
    calibrate,
    chex_realloc,
    group_widths_of,
    minimum_widths,
    rebuild,
    tp_magnitude,
    uniform_level,
)
from pruneflow.structured.comparison import summarize
from pruneflow.structured.realize import measured_speedup, realize
from pruneflow.structured.verify import reaimed, uniform_rule
from pruneflow.structured.widths import thin_copy
from pruneflow.timing.table import host_description
from pruneflow.train import evaluate

_PREDICTOR = {
    "search": "timing table",
    "uniform": "timing table",
    "chex_realloc": "FLOPs",
    "tp_magnitude": "MACs",
}


def _load() -> float:
    return float(os.getloadavg()[0])


def _probe(p: Params, in_shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(p.structured.timing.seed)
    return torch.randn((p.structured.timing.batch_size, *in_shape), generator=gen)


def _table_speedup(table: Any, widths: list[int]) -> float:
    """The timing table's predicted speedup when every width lies on the grid (nan if not)."""
    levels = []
    for g, w in enumerate(widths):
        hits = np.flatnonzero(table.widths[g] == w)
        if hits.size == 0:
            return math.nan
        levels.append(int(hits[0]))
    return table.predict_speedup(levels)


def _macs(model: nn.Module, example: torch.Tensor) -> float:
    macs, _ = tp.utils.count_ops_and_params(model, example)
    return float(macs)


# ------------------------------------------------------------ structured_compare_profiles


def _profiles(p: Params) -> dict[str, Any]:
    data, _, test_idx, true, model, example = _dense_inputs(p)
    groups, table, db = _open(p, model, example)
    c, s = p.structured.compare, p.structured
    plans = read_parquet(paths.plans_table(p), paths.PLAN_COLUMNS)
    missing = sorted(set(s.targets) - set(plans["target"]))
    if "search" in c.methods and missing:
        raise PruneflowError(f"{paths.plans_table(p)} has no plan for targets {missing}")
    in_shape = tuple(data.in_shape)
    flops = FlopsModel(model, in_shape, groups)
    dense_flops, dense_macs = flops.dense(), _macs(model, example)
    x = _probe(p, in_shape)

    def speed(thin: nn.Module) -> float:
        return measured_speedup(
            model,
            thin,
            x,
            s.timing.threads,
            c.calibration_repeats,
            2,
            s.timing.quantile,
            s.measure_block_seconds,
        )

    minimum = minimum_widths(groups, s.min_fraction, s.min_channels)
    floor = flops.flops(minimum) / dense_flops
    v = s.verify
    # a budget meets the target when measured at or above it (as the search's window does)
    meets = 1.0
    rows, attempts = [], []
    jobs = [(t, m) for t in s.targets for m in c.methods]
    for t, method in jobs:
        budget, steps, calibrated = math.nan, 0, math.nan
        if method == "search":
            # re-aimed on its measured speedup by structured_search already
            levels = json.loads(plans[plans["target"] == t].iloc[0]["levels"])
            thin = realize(model, groups, db, levels, example)
            calibrated = speed(thin)
        elif method == "uniform":
            levels = [uniform_level(table, t)] * len(groups)
            if v.rounds > 0:
                solve = uniform_rule(table)

                def timed(lv: Any) -> float:
                    return speed(realize(model, groups, db, list(lv), example))

                what = f"{p.model.name}'s uniform widths"
                kept, rows_tried = reaimed(what, "uniform", t, solve, table, timed, v, uniform=True)
                attempts += rows_tried
                levels, steps, calibrated = list(kept.levels), len(rows_tried), kept.measured
            budget = float(levels[0])
            thin = realize(model, groups, db, levels, example)
            if steps == 0:
                calibrated = speed(thin)
        else:

            def step(i: int, n: int, m: str = method, tt: float = t) -> None:
                report_progress(f"{p.model.name} {m} at {tt}x: calibration", i, n)

            if method == "chex_realloc":

                def build(fraction: float) -> nn.Module:
                    masks = chex_realloc(
                        model, groups, flops, fraction, s.min_fraction, s.min_channels
                    )
                    keep = {g: m.nonzero().flatten() for g, m in masks.items()}
                    return thin_copy(model, groups, keep).eval()

                # a larger FLOPs fraction prunes less
                lo, hi = floor * (1 + 1e-6), 1.0
                found = calibrate(build, speed, t, lo, hi, c.calibration_steps, False, step, meets)
            else:
                lo, hi = 0.0, c.tp_max_ratio
                found = calibrate(
                    lambda r: tp_magnitude(model, example, r, c.tp_max_ratio),
                    speed,
                    t,
                    lo,
                    hi,
                    c.calibration_steps,
                    True,
                    step,
                    meets,
                )
            thin, budget, calibrated = found.model, found.budget, found.measured_speedup
            steps = len(found.tried)
            attempts += [
                {"target": float(t), "rule": method, "budget": b, "measured": m}
                for b, m in found.tried
            ]
            if calibrated < v.floor * t:
                raise PruneflowError(
                    f"target speedup {t:g}x is unreachable for {p.model.name} by {method} as "
                    f"measured end to end: {steps} budgets tried in [{lo:.3g}, {hi:.3g}], the "
                    f"fastest measured {max(m for _, m in found.tried):.3g}x, below "
                    f"{v.floor:g} of the target; lower structured.targets"
                )
        widths = group_widths_of(thin, groups)
        flops_speedup = dense_flops / flops.flops(widths)
        table_speedup = _table_speedup(table, widths)
        plan_speedup = (
            float(plans[plans["target"] == t].iloc[0]["predicted_speedup"])
            if method == "search"
            else table_speedup
        )
        predicted = {
            "timing table": plan_speedup,
            "FLOPs": flops_speedup,
            "MACs": dense_macs / _macs(thin, example),
        }[_PREDICTOR[method]]
        _, acc = evaluate(thin, data, test_idx, true)
        out = paths.profile_model(p, method, t)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(
            out,
            {k: v.contiguous() for k, v in thin.state_dict().items()},
            metadata={"method": method, "target": str(t), "widths": json.dumps(widths)},
        )
        rows.append(
            {
                "method": method,
                "target": float(t),
                "widths": json.dumps(widths),
                "budget": budget,
                "predictor": _PREDICTOR[method],
                "predicted_speedup": predicted,
                "table_speedup": table_speedup,
                "flops_speedup": flops_speedup,
                "calibrated_speedup": calibrated,
                "calibration_steps": steps,
                "params": sum(v.numel() for v in thin.parameters()),
                "test_acc_before": acc,
            }
        )
        report_progress(f"{p.model.name}: compared profiles", len(rows), len(jobs))
    frame = pd.DataFrame(rows, columns=list(paths.PROFILE_COLUMNS))
    meta = {"host": host_description(s.timing.threads), "load_1min": _load(), "verify": attempts}
    write_parquet(paths.profiles_table(p), frame, meta)
    return {f"{r['method']}@{r['target']}x": round(float(r["calibrated_speedup"]), 3) for r in rows}


def _profile_outputs(p: Params) -> list:
    c, s = p.structured.compare, p.structured
    models = [paths.profile_model(p, m, t) for t in s.targets for m in c.methods]
    return [paths.profiles_table(p), *models]


def _common_inputs(p: Params) -> list:
    return [layout.labels_table(p), paths.dense_checkpoint(p), sidecar(paths.dense_checkpoint(p))]


STRUCTURED_COMPARE_PROFILES = Step(
    name="structured_compare_profiles",
    reads=(
        *_DATA,
        *_GRID,
        "structured.targets",
        "structured.timing",
        "structured.compare.methods",
        "structured.compare.calibration_steps",
        "structured.compare.calibration_repeats",
        "structured.compare.tp_max_ratio",
        "structured.measure_block_seconds",
        "structured.verify",
    ),
    inputs=lambda p: [
        *_common_inputs(p),
        paths.timing_table(p),
        paths.recondb_dir(p),
        paths.plans_table(p),
    ],
    outputs=_profile_outputs,
    compute=_profiles,
    description="every compared profile per target, baselines bisected on measured speedup",
    environment=lambda p: host_description(p.structured.timing.threads),
)


# --------------------------------------------------------------------- structured_compare


def compare_items(p: Params) -> list[dict[str, Any]]:
    """Every fine-tuning run ``{method, target, seed}``, seed by seed (a run stopped part-way
    leaves complete, paired seeds)."""
    c, s = p.structured.compare, p.structured
    return [
        {"method": m, "target": float(t), "seed": int(seed)}
        for seed in c.seeds
        for t in s.targets
        for m in c.methods
    ]


def _compare(p: Params, item: dict[str, Any]) -> dict[str, Any]:
    data, train_idx, test_idx, true, model, example = _dense_inputs(p)
    groups, _, _, _ = _grid(p, model, example)
    s = p.structured
    method, target, seed = item["method"], float(item["target"]), int(item["seed"])
    profiles = read_parquet(paths.profiles_table(p), paths.PROFILE_COLUMNS)
    row = profiles[(profiles["method"] == method) & (profiles["target"] == target)]
    if row.empty:
        raise PruneflowError(f"{paths.profiles_table(p)} has no {method} profile at {target}x")
    row = row.iloc[0]
    widths = json.loads(row["widths"])
    thin = rebuild(model, groups, widths)
    thin.load_state_dict(load_tensors(paths.profile_model(p, method, target)))
    _finetune(
        p,
        thin,
        (data, train_idx, true),
        f"fine-tune {p.model.name} {method} at {target}x, seed {seed}",
        seed=seed,
    )
    _, acc = evaluate(thin, data, test_idx, true)
    x = _probe(p, tuple(data.in_shape))
    load = _load()
    speedup = _measured(p, model, thin, x)
    record = {
        "method": method,
        "target": target,
        "seed": seed,
        "test_acc": acc,
        "test_acc_before": float(row["test_acc_before"]),
        "measured_speedup": speedup,
        "predicted_speedup": float(row["predicted_speedup"]),
        "predictor": row["predictor"],
        "flops_speedup": float(row["flops_speedup"]),
        "params": int(row["params"]),
        "finetune_epochs": s.finetune_epochs,
        "finetune_lr": s.finetune_lr,
        "widths": row["widths"],
        "test_size": len(test_idx),
        "load_1min": max(load, _load()),
    }
    write_json(paths.run_record(p, item), record)
    return {"test_acc": acc, "measured_speedup": speedup}


STRUCTURED_COMPARE = Step(
    name="structured_compare",
    reads=(
        *_DATA,
        *_GRID,
        *_TRAIN,
        "structured.finetune_epochs",
        "structured.finetune_lr",
        "structured.measure_repeats",
        "structured.measure_passes",
        "structured.measure_block_seconds",
        "structured.timing",
    ),
    inputs=lambda p, item: [
        *_common_inputs(p),
        paths.profiles_table(p),
        paths.profile_model(p, item["method"], item["target"]),
    ],
    outputs=lambda p, item: [paths.run_record(p, item)],
    compute=_compare,
    description="one compared profile fine-tuned (method, target, seed): accuracy, speedup",
    environment=lambda p: host_description(p.structured.timing.threads),
    fan_out=True,
    items=compare_items,
)


# -------------------------------------------------------------- structured_compare_report


def _report(p: Params) -> dict[str, Any]:
    records = [json.loads(paths.run_record(p, i).read_text()) for i in compare_items(p)]
    full = pd.DataFrame(records)
    frame = full[list(paths.COMPARISON_COLUMNS)]
    summary = summarize(full)
    loads = full["load_1min"].astype(float)
    meta = {
        "summary": json.loads(summary.to_json(orient="records")),
        "host": host_description(p.structured.timing.threads),
        "test_size": int(full["test_size"].iloc[0]),
        "load_1min_range": [float(loads.min()), float(loads.max())],
    }
    write_parquet(paths.comparison_table(p), frame, meta)
    metrics: dict[str, Any] = {}
    for r in summary.itertuples():
        metrics.setdefault(f"{r.target}x", {})[r.method] = {
            "n": int(r.n),
            "test_acc_mean": round(float(r.test_acc_mean), 5),
            "diff_vs_search": None if math.isnan(r.diff_vs_search) else round(r.diff_vs_search, 5),
            "measured_speedup": round(float(r.measured_speedup), 4),
            "predicted_speedup": round(float(r.predicted_speedup), 4),
        }
    write_json(paths.compare_metrics_json(p), metrics)
    return metrics


STRUCTURED_COMPARE_REPORT = Step(
    name="structured_compare_report",
    reads=(*_DATA, "structured.targets", "structured.compare.methods", "structured.compare.seeds"),
    inputs=lambda p: [paths.run_record(p, i) for i in compare_items(p)],
    outputs=lambda p: [paths.comparison_table(p), paths.compare_metrics_json(p)],
    compute=_report,
    description="the comparison's runs and summary (n, mean [95%], paired diff to the search)",
)

STRUCTURED_COMPARE_STEPS = (
    STRUCTURED_COMPARE_PROFILES,
    STRUCTURED_COMPARE,
    STRUCTURED_COMPARE_REPORT,
)
