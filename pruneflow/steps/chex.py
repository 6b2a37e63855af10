"""Steps of the CHEX pipeline (run them on ``config.scoped(params, "chex:MODEL")``, i.e. ``--scope
chex:MODEL`` once config.py knows the section).

* ``chex_train``: CHEX training from scratch at ``chex.flops_reduction`` (or ``chex.sparsity``)
  -> the masked full-size model, its masks, the exploration history.
* ``chex_extract``: the physically smaller model + ``metrics.json`` (FLOPs dense / masked /
  extracted, parameters, CPU latency, test accuracy, extracted-vs-masked output difference).
* ``chex_compare`` (fan-out, one item per ``{method, target, seed}``): one comparison run each,
  so every run is cached and resumed on its own.
* ``chex_report``: ``comparison.parquet``, ``ablation.parquet`` and the figures under
  ``artifacts/reports/``, and the comparison's summary as DVC metrics
  (``metrics/chex_report/<dataset>-<model>.json``).

Every step writes the same files whatever the params hold, so dvc.yaml's outs are true for
every params value: without ``chex.compare.ablations``, ``ablation.parquet`` has its columns
and no rows and the ablation figure says that none ran.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import torch

from pruneflow import layout
from pruneflow.checkpoint import save_checkpoint, sidecar
from pruneflow.chex import paths
from pruneflow.chex.arch import build_model
from pruneflow.chex.extract import extract
from pruneflow.chex.flops import FlopsModel, count_flops, count_params, measure_latency
from pruneflow.chex.groups import find_groups
from pruneflow.chex.methods import Split, run_method, train_chex
from pruneflow.chex.report import (
    ablation_frame,
    comparison_frame,
    plot_ablation,
    plot_accuracy,
    plot_channels,
    plot_exploration,
    read_run_record,
    summarize,
)
from pruneflow.chex.store import load_masked, load_masks, save_extracted, save_masks
from pruneflow.config import Params
from pruneflow.data import ImageData
from pruneflow.io import write_json, write_parquet
from pruneflow.runtime import configure, progress_enabled
from pruneflow.steps.base import Step, say
from pruneflow.steps.data import load_data, read_labels
from pruneflow.steps.dense import load_user_weights, weights_inputs
from pruneflow.train import evaluate

_DATA = ("data.dataset", "data.root", "data.image_size", "model.name")
_TRAIN = tuple(
    f"train.{k}"
    for k in (
        "epochs",
        "batch_size",
        "optimizer",
        "lr",
        "momentum",
        "weight_decay",
        "schedule",
        "step_size",
        "gamma",
    )
)
_EXPLORE = tuple(
    f"chex.{k}"
    for k in (
        "shift",
        "delta_t",
        "t_max",
        "delta0",
        "min_fraction",
        "realloc",
        "include",
        "exclude",
    )
)


def _setup(p: Params) -> tuple[ImageData, Split]:
    configure(p.runtime.threads, p.runtime.flush_denormal)
    frame, _ = read_labels(p)
    return load_data(p), Split.from_frame(frame)


def _arch(p: Params, data: Any) -> dict[str, Any]:
    return {"name": p.model.name, "num_classes": data.num_classes, "in_shape": list(data.in_shape)}


# ---------------------------------------------------------------------------- chex_train


def _say_weights_are_the_reference(p: Params) -> None:
    if p.model.weights is not None:
        say(
            f"  chex {p.model.name}: CHEX trains from scratch by definition; {p.model.weights} "
            "is the comparison's dense reference only"
        )


def _train(p: Params) -> dict[str, Any]:
    _say_weights_are_the_reference(p)
    data, split = _setup(p)
    chex = p.chex
    model, explorer, history = train_chex(
        p.model.name, data, split, p.train, chex, progress=progress_enabled(p.runtime.progress)
    )
    counts = explorer.counts()
    effective = explorer.effective_flops()
    summary = {
        "channels": counts,
        "channel_sizes": {g.name: g.size for g in explorer.groups},
        "flops_dense": explorer.dense_flops,
        "flops_masked_effective": effective,
        "flops_reduction": 1.0 - effective / explorer.dense_flops,
        "prune_regrow_steps": explorer.n_steps,
        "train_acc_last_epoch": history.acc[-1],
    }
    save_checkpoint(
        paths.masked_checkpoint(p),
        model,
        _arch(p, data),
        {
            "params": {"train": p.train.model_dump(), "chex": chex.model_dump(mode="json")},
            "settings": asdict(explorer.settings),
            "summary": summary,
            "history": {"loss": history.loss, "acc": history.acc, "lr": history.lr},
            "seed": p.train.seed,
        },
    )
    save_masks(paths.masks_file(p), explorer.state.active)
    write_parquet(
        paths.exploration_table(p),
        pd.DataFrame(explorer.history).astype({"group": object}),
        metadata={"settings": asdict(explorer.settings)},
    )
    return summary


CHEX_TRAIN = Step(
    name="chex_train",
    reads=(*_DATA, *_TRAIN, "train.seed", *_EXPLORE, "chex.flops_reduction", "chex.sparsity"),
    inputs=lambda p: [layout.labels_table(p)],
    outputs=lambda p: [
        paths.masked_checkpoint(p),
        sidecar(paths.masked_checkpoint(p)),
        paths.masks_file(p),
        paths.exploration_table(p),
    ],
    compute=_train,
    description="CHEX training from scratch: channel exploration -> masked model + masks",
)


# -------------------------------------------------------------------------- chex_extract


@torch.no_grad()
def _max_abs_diff(a: torch.nn.Module, b: torch.nn.Module, images: torch.Tensor) -> float:
    a.eval(), b.eval()
    worst = 0.0
    for chunk in images.split(256):
        worst = max(worst, float((a(chunk) - b(chunk)).abs().max()))
    return worst


def _extract(p: Params) -> dict[str, Any]:
    data, split = _setup(p)
    lat = p.chex.latency
    masked, meta = load_masked(paths.masked_checkpoint(p))
    example = data.images(split.train[:2])
    in_shape = tuple(data.in_shape)
    groups = find_groups(masked, example, p.chex.include, p.chex.exclude, p.model.name)
    masks = load_masks(paths.masks_file(p), groups)
    sub = extract(masked, groups, masks, example)
    dense = build_model(p.model.name, data.num_classes, in_shape, 0)
    flops_dense, flops_extracted = count_flops(dense, in_shape), count_flops(sub, in_shape)
    # every group's width, those chex.include/exclude left whole at their full size
    counts = {g.name: g.size for g in find_groups(masked, example)}
    counts |= {name: int(m.sum()) for name, m in masks.items()}
    _, test_acc = evaluate(sub, data, split.test, split.true)
    _, masked_acc = evaluate(masked, data, split.test, split.true)
    _, val_acc = evaluate(sub, data, split.val, split.true)
    timing = {"batch_size": lat.batch_size, "threads": lat.threads, "repeats": lat.repeats}
    metrics = {
        "flops_dense": flops_dense,
        "flops_masked_effective": FlopsModel(masked, in_shape, groups).flops(counts),
        "flops_extracted": flops_extracted,
        "flops_reduction": 1.0 - flops_extracted / flops_dense,
        "params_dense": count_params(dense),
        "params_extracted": count_params(sub),
        "latency_ms_dense": measure_latency(dense, in_shape, **timing),
        "latency_ms_extracted": measure_latency(sub, in_shape, **timing),
        "latency": timing,
        "test_acc": test_acc,
        "test_acc_masked": masked_acc,
        "val_acc": val_acc,
        "max_abs_diff_extracted_vs_masked": _max_abs_diff(masked, sub, data.images(split.test)),
        "channels": counts,
        "channel_sizes": {g.name: g.size for g in groups},
    }
    metrics["latency_speedup"] = metrics["latency_ms_dense"] / metrics["latency_ms_extracted"]
    save_extracted(paths.extracted_checkpoint(p), sub, meta["arch"], counts, {"metrics": metrics})
    write_json(paths.metrics_json(p), metrics)
    return {k: v for k, v in metrics.items() if not isinstance(v, dict)}


CHEX_EXTRACT = Step(
    name="chex_extract",
    reads=(*_DATA, "chex.latency", "chex.include", "chex.exclude"),
    inputs=lambda p: [
        layout.labels_table(p),
        paths.masked_checkpoint(p),
        sidecar(paths.masked_checkpoint(p)),
        paths.masks_file(p),
    ],
    outputs=lambda p: [
        paths.extracted_checkpoint(p),
        sidecar(paths.extracted_checkpoint(p)),
        paths.metrics_json(p),
    ],
    compute=_extract,
    description="remove masked channels -> smaller model; FLOPs, params, latency, accuracy",
)


# -------------------------------------------------------------------------- chex_compare


def compare_items(p: Params) -> list[dict[str, Any]]:
    """Every comparison run: ``{method, target, seed}`` (dense reference runs at target 0).

    Seed by seed (every method and target of a seed before the next seed), so a run stopped
    part-way leaves complete, paired seeds rather than some methods with every seed."""
    c = p.chex.compare
    items = []
    for s in c.seeds:
        items += [
            {"method": m, "target": float(t), "seed": int(s)} for t in c.targets for m in c.methods
        ]
        if c.dense_reference:
            items.append({"method": "dense", "target": 0.0, "seed": int(s)})
    targets = c.targets if c.ablation_targets is None else c.ablation_targets
    items += [
        {"method": "chex", "target": float(t), "seed": int(s), "variant": v}
        for v in c.ablations
        for t in targets
        for s in c.seeds
    ]
    return items


def _chex_run(item: dict[str, Any]) -> dict[str, Any]:
    """The plain CHEX run an ``arch_scratch`` item takes its architecture from."""
    return {"method": "chex", "target": item["target"], "seed": item["seed"]}


def _compare_inputs(p: Params, item: dict[str, Any]) -> list:
    extra = [paths.run_record(p, _chex_run(item))] if item.get("variant") == "arch_scratch" else []
    if item["method"] == "dense":  # the user's checkpoint is the dense reference
        extra += weights_inputs(p)
    return [layout.labels_table(p), *extra]


def _compare(p: Params, item: dict[str, Any]) -> dict[str, Any]:
    channels = None
    if item.get("variant") == "arch_scratch":
        channels = read_run_record(paths.run_record(p, _chex_run(item)))["channels"]
    data, split = _setup(p)
    source: list[dict[str, str] | None] = []
    pretrained = None
    if item["method"] == "dense" and p.model.weights is not None:
        _say_weights_are_the_reference(p)
        pretrained = lambda model: source.append(load_user_weights(p, model))  # noqa: E731
    result, _ = run_method(
        item["method"],
        p.model.name,
        data,
        split,
        p.train,
        p.chex,
        float(item["target"]),
        int(item["seed"]),
        progress=progress_enabled(p.runtime.progress),
        variant=item.get("variant"),
        channels=channels,
        pretrained=pretrained,
    )
    write_json(paths.run_record(p, item), {**result.record(), "weights": next(iter(source), None)})
    return {
        "test_acc": result.test_acc,
        "flops_reduction": result.flops_reduction,
    }


CHEX_COMPARE = Step(
    name="chex_compare",
    reads=(
        *_DATA,
        *_TRAIN,
        *_EXPLORE,
        "chex.compare.pretrain_fraction",
        "chex.compare.finetune_lr",
        "chex.compare.slimming_l1",
    ),
    inputs=_compare_inputs,  # arch_scratch items also read their CHEX run's record
    outputs=lambda p, item: [paths.run_record(p, item)],
    compute=_compare,
    description="one comparison run (method, FLOPs target, seed) at equal FLOPs and epochs "
    "(the dense reference: chex.weights when given)",
    fan_out=True,
    items=compare_items,
)


# --------------------------------------------------------------------------- chex_report

REPORT_FIGURES = ("accuracy", "channels", "exploration", "ablation")


def _report(p: Params) -> dict[str, Any]:
    every = [read_run_record(paths.run_record(p, item)) for item in compare_items(p)]
    records = [r for r in every if not r.get("variant")]
    frame = comparison_frame(records)
    summary = summarize(frame)
    dense = [r for r in records if r["method"] == "dense"]
    dense_acc = [r["test_acc"] for r in dense]
    flops_dense = records[0]["flops_dense"]
    write_parquet(
        paths.comparison_table(p),
        frame,
        metadata={
            "summary": summary.to_dict("records"),
            "dense_test_acc": dense_acc,
            "flops_dense": flops_dense,
            "train": p.train.model_dump(),
        },
    )
    title = f"{p.model.name} on {p.data.dataset}, {p.train.epochs} epochs"
    plot_accuracy(
        frame,
        dense_acc,
        flops_dense,
        paths.report_figure(p, "accuracy"),
        f"Accuracy vs FLOPs at equal epochs: {title}",
    )
    plot_channels(records, paths.report_figure(p, "channels"), f"Channels per group: {title}")
    plot_exploration(
        records, paths.report_figure(p, "exploration"), f"CHEX exploration (seed 0): {title}"
    )
    ablation = ablation_frame(every)
    write_parquet(paths.ablation_table(p), ablation)
    plot_ablation(ablation, paths.report_figure(p, "ablation"), f"CHEX ablations: {title}")
    dense_mean = float(np.mean(dense_acc)) if dense_acc else None
    write_json(layout.metrics_file(p, "chex_report"), comparison_metrics(summary, dense_mean))
    return {"summary": summary.round(5).to_dict("records"), "dense_test_acc_mean": dense_mean}


def comparison_metrics(summary: pd.DataFrame, dense_mean: float | None) -> dict[str, Any]:
    """The comparison as DVC metrics: ``{"flops-70%": {"chex": {"test_acc_mean": ...}}}``."""
    out: dict[str, Any] = {"dense_test_acc_mean": dense_mean}
    for row in summary.itertuples():
        out.setdefault(f"flops-{row.flops_reduction_target:.0%}", {})[row.method] = {
            "test_acc_mean": round(float(row.test_acc_mean), 5),
            "test_acc_std": None if pd.isna(row.test_acc_std) else round(row.test_acc_std, 5),
            "flops_reduction": round(float(row.flops_reduction), 5),
            "seeds": int(row.seeds),
        }
    return out


CHEX_REPORT = Step(
    name="chex_report",
    reads=("data.dataset", "model.name", "train.epochs", "chex.compare"),
    inputs=lambda p: [paths.run_record(p, item) for item in compare_items(p)],
    outputs=lambda p: [
        paths.comparison_table(p),
        paths.ablation_table(p),
        *(paths.report_figure(p, k) for k in REPORT_FIGURES),
        layout.metrics_file(p, "chex_report"),
    ],
    compute=_report,
    description="comparison.parquet + accuracy-vs-FLOPs and channel-count figures",
)


CHEX_STEPS = (CHEX_TRAIN, CHEX_EXTRACT, CHEX_COMPARE, CHEX_REPORT)
