"""Steps of the structured pipeline (run them on ``config.scoped(params, "structured:MODEL")``).

* ``structured_dense``: the dense model, trained with ``structured.train``.
* ``structured_profile``: the structured timing table on this host (its fingerprint holds the
  host description, so a table from another machine is never a cache hit).
* ``structured_recondb``: keep sets and least-squares refits per group and width level.
* ``structured_search``: SPDY's search per target speedup, its best few profiles fine-tuned
  briefly to choose among them (``structured.search.finetune_top_k``), each plan realized and
  re-aimed by a new search until its measured speedup meets the target
  (``structured.verify``) -> ``plans.parquet``.
* ``structured_realize``: each plan as a physically smaller model, fine-tuned; its measured
  end-to-end speedup and test accuracy -> ``results.parquet`` and DVC metrics.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from torch import nn

from pruneflow import layout
from pruneflow.checkpoint import load_checkpoint, save_checkpoint, sidecar
from pruneflow.config import Params, TrainParams
from pruneflow.errors import PruneflowError
from pruneflow.io import atomic_path, read_parquet, write_json, write_parquet
from pruneflow.runtime import configure, progress_enabled, report_progress
from pruneflow.spdy.search import HISTORY_COLUMNS
from pruneflow.steps.base import Step
from pruneflow.steps.data import load_data, read_labels
from pruneflow.structured import paths
from pruneflow.structured.database import StructuredDB, build_database
from pruneflow.structured.realize import measured_speedup, realize
from pruneflow.structured.search import (
    FinetunedLoss,
    StructuredPlan,
    WidthLoss,
    budget,
    search_widths,
)
from pruneflow.structured.timing import measure_table, read_table, write_table
from pruneflow.structured.verify import reaimed, search_rule, searched_rule
from pruneflow.structured.widths import fractions, structured_groups, width_grid
from pruneflow.timing.table import host_description
from pruneflow.train import evaluate, seeded_build, train

_DATA = ("data.dataset", "data.root", "data.image_size", "model.name")
_GRID = (
    "structured.levels",
    "structured.min_fraction",
    "structured.multiple",
    "structured.min_channels",
)
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
        "seed",
    )
)


def _split(p: Params) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    frame, _ = read_labels(p)
    split = frame["split"].to_numpy()
    return (
        frame,
        np.flatnonzero(split == "train"),
        np.flatnonzero(split == "test"),
        frame["true_label"].to_numpy(),
    )


def _grid(p: Params, model: nn.Module, example: torch.Tensor):  # noqa: ANN202
    groups, wiring = structured_groups(model, example)
    grid = fractions(p.structured.levels, p.structured.min_fraction)
    s = p.structured
    return groups, wiring, grid, width_grid(groups, grid, s.multiple, s.min_channels)


def _batches(
    data: Any, idx: np.ndarray, labels: np.ndarray
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The images ``idx`` with their labels, in batches of 128."""
    x = data.images(idx)
    y = torch.as_tensor(labels[idx], dtype=torch.long)
    return [(x[i : i + 128], y[i : i + 128]) for i in range(0, len(idx), 128)]


def _calibration(p: Params, data: Any, train_idx: np.ndarray, labels: np.ndarray):  # noqa: ANN202
    rng = np.random.default_rng(p.structured.recon.calib_seed)
    return _batches(
        data, np.sort(rng.permutation(train_idx)[: p.structured.recon.calib_samples]), labels
    )


def _dense(p: Params) -> nn.Module:
    model, _ = load_checkpoint(paths.dense_checkpoint(p))
    return model.eval()


# ------------------------------------------------------------------------ structured_dense


def _dense_inputs(
    p: Params,
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, nn.Module, torch.Tensor]:
    """What the steps after dense training start from: the data, its train and test indices
    and true labels, the dense model and an example input."""
    configure(p.runtime.threads, p.runtime.flush_denormal)
    data = load_data(p)
    _, train_idx, test_idx, true = _split(p)
    return data, train_idx, test_idx, true, _dense(p), torch.zeros(1, *data.in_shape)


def _train_dense(p: Params) -> dict[str, Any]:
    configure(p.runtime.threads, p.runtime.flush_denormal)
    data = load_data(p)
    _, train_idx, test_idx, true = _split(p)
    model = seeded_build(p.model.name, data.num_classes, data.in_shape, p.train.seed)
    history = train(
        model,
        data,
        train_idx,
        true,
        p.train,
        progress_enabled(p.runtime.progress),
        description=f"structured dense {p.model.name}",
    )
    _, acc = evaluate(model, data, test_idx, true)
    arch = {"name": p.model.name, "num_classes": data.num_classes, "in_shape": list(data.in_shape)}
    save_checkpoint(
        paths.dense_checkpoint(p),
        model,
        arch,
        {"metrics": {"test_acc": acc}, "history": {"loss": history.loss}},
    )
    return {"test_acc": acc}


STRUCTURED_DENSE = Step(
    name="structured_dense",
    reads=(*_DATA, *_TRAIN),
    inputs=lambda p: [layout.labels_table(p)],
    outputs=lambda p: [paths.dense_checkpoint(p), sidecar(paths.dense_checkpoint(p))],
    compute=_train_dense,
    description="the dense model the structured search thins (structured.train)",
)


# ---------------------------------------------------------------------- structured_profile


def _profile(p: Params) -> dict[str, Any]:
    configure(p.runtime.threads, p.runtime.flush_denormal)
    data = load_data(p)
    # layer times depend on shapes, not on trained weights: a freshly built model will do
    model = seeded_build(p.model.name, data.num_classes, data.in_shape, 0).eval()
    example = torch.zeros(1, *data.in_shape)
    groups, wiring, grid, widths = _grid(p, model, example)
    table = measure_table(
        model,
        p.model.name,
        groups,
        wiring,
        widths,
        grid,
        tuple(data.in_shape),
        p.structured.timing,
        progress=report_progress,
    )
    write_table(paths.timing_table(p), table)
    return {
        "seconds": round(float(table.meta["seconds"]), 1),
        "cpu_seconds": round(float(table.meta["cpu_seconds"]), 1),
        "dense_total_ms": table.dense_total_ms,
        "remainder_ms": table.remainder_ms,
        "max_speedup": table.max_speedup(),
    }


STRUCTURED_PROFILE = Step(
    name="structured_profile",
    reads=(*_DATA, *_GRID, "structured.timing"),
    inputs=lambda p: [layout.labels_table(p)],
    outputs=lambda p: [paths.timing_table(p)],
    compute=_profile,
    description="time every channel group's thinned layers at every width on this host",
    environment=lambda p: host_description(p.structured.timing.threads),
)


# ---------------------------------------------------------------------- structured_recondb


def _recondb(p: Params) -> dict[str, Any]:
    data, train_idx, test_idx, true, model, example = _dense_inputs(p)
    groups, _, grid, widths = _grid(p, model, example)
    batches = [x for x, _ in _calibration(p, data, train_idx, true)]
    db = build_database(
        paths.recondb_dir(p),
        model,
        p.model.name,
        groups,
        widths,
        grid,
        batches,
        p.structured.recon,
        progress=report_progress,
    )
    return {
        "rows": len(db.index),
        "refit_share": float(db.index["refit"].mean()),
        "mean_rel_error": float(db.index["rel_error"].mean()),
    }


STRUCTURED_RECONDB = Step(
    name="structured_recondb",
    reads=(*_DATA, *_GRID, "structured.recon"),
    inputs=lambda p: [
        layout.labels_table(p),
        paths.dense_checkpoint(p),
        sidecar(paths.dense_checkpoint(p)),
    ],
    outputs=lambda p: [paths.recondb_dir(p)],
    compute=_recondb,
    description="per group and width: channels kept, consumers refitted by least squares",
)


# ----------------------------------------------------------------------- structured_search


def _open(p: Params, model: nn.Module, example: torch.Tensor):  # noqa: ANN202
    groups, _, _, _ = _grid(p, model, example)
    names = [g.name for g in groups]
    table = read_table(
        paths.timing_table(p),
        p.model.name,
        names,
        host=host_description(p.structured.timing.threads),
    )
    db = StructuredDB.open(paths.recondb_dir(p), p.model.name, names)
    return groups, table, db


def _scoring_batches(
    p: Params, data: Any, train_idx: np.ndarray, true: np.ndarray
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """What the search scores candidates on (``structured.score_split``). The database's refit
    is a least-squares fit on the calibration images, so on them a thinned width loses less than
    it does on images it was not fitted to (resnet_mini, 1.5x: the searched plan 1.636 against
    uniform widths' 1.739 on the calibration set, 1.898 against 1.887 on held-out images, and
    48.6% against 64.6% after fine-tuning): by default the validation split, which neither the
    dense training nor the refit has seen."""
    if p.structured.score_split == "calibration":
        return _calibration(p, data, train_idx, true)
    frame, _ = read_labels(p)
    val = np.flatnonzero(frame["split"].to_numpy() == "val")
    if val.size == 0:
        raise PruneflowError(
            f"structured.score_split is 'val' but {layout.labels_table(p)} has no validation "
            "images: set data.val_fraction above 0, or structured.score_split: calibration"
        )
    return _batches(data, val, true)


def _search(p: Params) -> dict[str, Any]:
    data, train_idx, test_idx, true, model, example = _dense_inputs(p)
    groups, table, db = _open(p, model, example)
    batches = _scoring_batches(p, data, train_idx, true)
    if p.structured.search.calib_samples is not None:
        keep = p.structured.search.calib_samples
        x = torch.cat([b[0] for b in batches])[:keep]
        y = torch.cat([b[1] for b in batches])[:keep]
        batches = [(x[i : i + 128], y[i : i + 128]) for i in range(0, len(x), 128)]
    loss = WidthLoss(model, groups, db, batches, bn=p.structured.search.bn)
    dense_loss = loss([0] * len(groups))
    finetuned = _short_finetune(p, model, groups, db, example, (data, train_idx, true), batches)
    measure = _realized_speedup(p, model, groups, db, example, tuple(data.in_shape))
    v, cfg = p.structured.verify, p.structured.search
    show = progress_enabled(p.runtime.progress)

    searches: list[dict[str, Any]] = []  # what each search cost (a new one per re-aim)
    found: list[StructuredPlan] = []  # every search's plan, this target's

    def search(aim: float) -> StructuredPlan:
        start = time.perf_counter()
        tuned = finetuned.seconds if finetuned is not None else 0.0
        plan = search_widths(table, loss, aim, cfg, progress=show, finetuned=finetuned)
        tuning = (finetuned.seconds if finetuned is not None else 0.0) - tuned
        searches.append(
            {
                "target": float(target),
                "aim": float(aim),
                "seconds": time.perf_counter() - start - tuning,
                "finetune_seconds": tuning,
                "distinct_profiles": plan.result.distinct_profiles,
                "finetuned": len(plan.finetuned),
            }
        )
        found.append(plan)
        return plan

    rows, attempts, compared = [], [], []
    for target in p.structured.targets:
        found.clear()
        levels, aim, measured = (), float(target), math.nan
        if v.rounds == 0:
            plan = search(target)
            levels = plan.levels
        elif cfg.reaim == "search":
            budget(table, target, cfg.buckets)  # beyond the table: the line naming its reach
            solve, plans = searched_rule(search)
            what = f"{p.model.name}'s searched profile"
            kept, rows_tried = reaimed(what, "search", target, solve, table, measure, v)
            attempts += rows_tried
            levels, aim, measured = kept.levels, kept.aim, kept.measured
            plan = plans[levels]
            compared += _compared(target, found, levels)
        else:  # SPDY's rule: the DP with the first search's sensitivities
            plan = search(target * (1.0 + v.tolerance))
            solve = search_rule(table, plan.result.best_c, cfg.buckets)
            what = f"{p.model.name}'s searched profile"
            kept, rows_tried = reaimed(
                what, "search", target, solve, table, measure, v, first=plan.levels
            )
            attempts += rows_tried
            levels, aim, measured = kept.levels, kept.aim, kept.measured
            compared += _compared(target, found, levels)
        write_parquet(
            paths.history_table(p, target), plan.result.history_frame()[list(HISTORY_COLUMNS)]
        )
        by_levels = {f.levels: f.finetuned_loss for f in plan.finetuned}
        rows.append(
            {
                "target": float(target),
                "levels": json.dumps(list(levels)),
                "widths": json.dumps([int(table.widths[g, s]) for g, s in enumerate(levels)]),
                "predicted_speedup": table.predict_speedup(list(levels)),
                "aim": aim,
                "measured_speedup": measured,
                "calib_loss": loss(levels),
                "dense_calib_loss": dense_loss,
                "finetuned_loss": by_levels.get(tuple(levels), math.nan),
                "candidates": plan.result.evaluations,
                "distinct_profiles": plan.result.distinct_profiles,
            }
        )
    frame = pd.DataFrame(rows, columns=list(paths.PLAN_COLUMNS))
    meta = {
        "groups": [g.name for g in groups],
        "verify": attempts,
        "finetuned": compared,
        "searches": searches,
    }
    write_parquet(paths.plans_table(p), frame, meta)
    return {
        "plans": len(rows),
        "predicted": [r["predicted_speedup"] for r in rows],
        "measured": [r["measured_speedup"] for r in rows],
        "attempts": {str(t): sum(a["target"] == t for a in attempts) for t in p.structured.targets},
        "search_seconds": [round(r["seconds"], 1) for r in searches],
        "finetune_seconds": [round(r["finetune_seconds"], 1) for r in searches],
    }


def finetune_recipe(p: Params, seed: int | None = None) -> TrainParams:
    """How every thinned model is fine-tuned: ``structured.finetune_epochs`` of ``p.train``'s
    recipe at ``structured.finetune_lr``; ``seed`` replaces ``p.train.seed``."""
    s = p.structured
    update: dict[str, Any] = {"epochs": s.finetune_epochs, "lr": s.finetune_lr}
    if seed is not None:
        update["seed"] = seed
    return TrainParams(**{**p.train.model_dump(), **update})


def _short_finetune(
    p: Params,
    model: nn.Module,
    groups: Any,
    db: StructuredDB,
    example: torch.Tensor,
    split: tuple[Any, np.ndarray, np.ndarray],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
) -> FinetunedLoss | None:
    """The short fine-tuning's score (``structured.search.finetune_top_k`` > 1): the first
    ``finetune_steps`` steps of the comparison's fine-tuning (its recipe, ``structured.train``'s
    seed), scored on the search's own batches; ``None`` when off or when nothing is
    fine-tuned (``structured.finetune_epochs: 0``)."""
    s = p.structured
    if s.search.finetune_top_k <= 1 or s.finetune_epochs <= 0:
        return None
    recipe = finetune_recipe(p)
    return FinetunedLoss(
        model, groups, db, example, split, recipe, s.search.finetune_steps, batches
    )


def _compared(target: float, plans: Any, kept: tuple[int, ...]) -> list[dict[str, Any]]:
    """The short fine-tuning's candidates of each search, as JSON-ready rows."""
    return [
        {
            "target": float(target),
            "aim": float(plan.target),
            "levels": list(f.levels),
            "widths": list(f.widths),
            "calib_loss": f.calib_loss,
            "finetuned_loss": f.finetuned_loss,
            "kept": f.levels == tuple(kept),
        }
        for plan in plans
        for f in plan.finetuned
    ]


def _realized_speedup(
    p: Params,
    model: nn.Module,
    groups: Any,
    db: StructuredDB,
    example: torch.Tensor,
    in_shape: tuple[int, ...],
) -> Any:
    """``measure(levels)``: the end-to-end speedup of the profile's physically thinned model
    (the weights do not change its speed, so before fine-tuning is as good as after)."""
    gen = torch.Generator().manual_seed(p.structured.timing.seed)
    x = torch.randn((p.structured.timing.batch_size, *in_shape), generator=gen)

    def measure(levels: Any) -> float:
        return _measured(p, model, realize(model, groups, db, list(levels), example), x)

    return measure


STRUCTURED_SEARCH = Step(
    name="structured_search",
    reads=(
        *_DATA,
        *_GRID,
        *_TRAIN,
        "structured.targets",
        "structured.search",
        "structured.recon",
        "structured.score_split",
        "structured.finetune_epochs",
        "structured.finetune_lr",
        "structured.verify",
        "structured.measure_repeats",
        "structured.measure_passes",
        "structured.measure_block_seconds",
        "structured.timing",
    ),
    inputs=lambda p: [
        layout.labels_table(p),
        paths.dense_checkpoint(p),
        sidecar(paths.dense_checkpoint(p)),
        paths.timing_table(p),
        paths.recondb_dir(p),
    ],
    outputs=lambda p: (
        [paths.plans_table(p)] + [paths.history_table(p, t) for t in p.structured.targets]
    ),
    compute=_search,
    description="SPDY's DP and search per target speedup, re-aimed on the measured speedup",
    environment=lambda p: host_description(p.structured.timing.threads),
)


# ---------------------------------------------------------------------- structured_realize


def _measured(p: Params, model: nn.Module, thin: nn.Module, x: torch.Tensor) -> float:
    """End-to-end speedup of ``thin`` over ``model`` with ``structured``'s measuring settings."""
    s = p.structured
    return measured_speedup(
        model,
        thin,
        x,
        s.timing.threads,
        s.measure_repeats,
        s.measure_passes,
        s.timing.quantile,
        s.measure_block_seconds,
    )


def _finetune(
    p: Params,
    thin: nn.Module,
    split: tuple[Any, np.ndarray, np.ndarray],
    description: str,
    seed: int | None = None,
) -> None:
    """:func:`finetune_recipe` on ``split`` = (data, train indices, labels)."""
    if p.structured.finetune_epochs <= 0:
        return
    data, train_idx, labels = split
    train(
        thin,
        data,
        train_idx,
        labels,
        finetune_recipe(p, seed),
        progress_enabled(p.runtime.progress),
        description=description,
    )


def _realize(p: Params) -> dict[str, Any]:
    data, train_idx, test_idx, true, model, example = _dense_inputs(p)
    groups, table, db = _open(p, model, example)

    plans = read_parquet(paths.plans_table(p), paths.PLAN_COLUMNS)
    missing = sorted(set(p.structured.targets) - set(plans["target"]))
    if missing:
        raise PruneflowError(f"{paths.plans_table(p)} has no plan for targets {missing}")
    _, dense_acc = evaluate(model, data, test_idx, true)
    gen = torch.Generator().manual_seed(p.structured.timing.seed)
    x = torch.randn((p.structured.timing.batch_size, *data.in_shape), generator=gen)
    rows = []
    for target in p.structured.targets:
        plan = plans[plans["target"] == target].iloc[0]
        levels = json.loads(plan["levels"])
        thin = realize(model, groups, db, levels, example)
        _, stitched_acc = evaluate(thin, data, test_idx, true)
        _finetune(p, thin, (data, train_idx, true), f"fine-tune {p.model.name} at {target}x")
        _, acc = evaluate(thin, data, test_idx, true)
        speedup = _measured(p, model, thin, x)
        keep = db.masks({g.name: g.size for g in groups}, levels)
        out = paths.realized_model(p, target)
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": p.model.name,
            "target": str(target),
            "widths": plan["widths"],
            "keep": json.dumps({g: m.nonzero().flatten().tolist() for g, m in keep.items()}),
        }
        with atomic_path(out) as tmp:
            save_file({k: v.contiguous() for k, v in thin.state_dict().items()}, str(tmp), meta)
        rows.append(
            {
                "target": float(target),
                "predicted_speedup": float(plan["predicted_speedup"]),
                "measured_speedup": speedup,
                "speedup_vs_target": speedup / float(target),
                "params_dense": sum(t.numel() for t in model.parameters()),
                "params_thin": sum(t.numel() for t in thin.parameters()),
                "test_acc_dense": dense_acc,
                "test_acc_stitched": stitched_acc,
                "test_acc": acc,
                "finetune_epochs": p.structured.finetune_epochs,
                "widths": plan["widths"],
            }
        )
        report_progress(f"realize {p.model.name}", len(rows), len(p.structured.targets))
    frame = pd.DataFrame(rows, columns=list(paths.RESULT_COLUMNS))
    write_parquet(paths.results_table(p), frame, {"host": host_description(1)})
    metrics = {
        f"{r['target']}x": {
            k: r[k]
            for k in ("measured_speedup", "predicted_speedup", "speedup_vs_target", "test_acc")
        }
        for r in rows
    }
    write_json(paths.metrics_json(p), metrics)
    return metrics


STRUCTURED_REALIZE = Step(
    name="structured_realize",
    reads=(
        *_DATA,
        *_GRID,
        *_TRAIN,
        "structured.targets",
        "structured.finetune_epochs",
        "structured.finetune_lr",
        "structured.measure_repeats",
        "structured.measure_passes",
        "structured.measure_block_seconds",
        "structured.timing",
    ),
    inputs=lambda p: [
        layout.labels_table(p),
        paths.dense_checkpoint(p),
        sidecar(paths.dense_checkpoint(p)),
        paths.timing_table(p),
        paths.recondb_dir(p),
        paths.plans_table(p),
    ],
    outputs=lambda p: (
        [paths.results_table(p), paths.metrics_json(p)]
        + [paths.realized_model(p, t) for t in p.structured.targets]
    ),
    compute=_realize,
    description="each plan as a physically smaller model, fine-tuned; measured speedup",
    environment=lambda p: host_description(p.structured.timing.threads),
)

STRUCTURED_STEPS = (
    STRUCTURED_DENSE,
    STRUCTURED_PROFILE,
    STRUCTURED_RECONDB,
    STRUCTURED_SEARCH,
    STRUCTURED_REALIZE,
)
