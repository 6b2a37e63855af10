"""Steps ``spdy_gmp`` (one per target x profile x seed) and ``spdy_results``: SPDY's Table 4.

``spdy_gmp`` (item ``{"target": 2.0, "profile": "spdy", "seed": 0}``): from the dense
checkpoint (or, with ``spdy.gmp.init_from_db``, the database's weights stitched for the
profile), gradual magnitude pruning towards the profile's per-layer sparsities (cubic schedule,
``pruneflow.sparsity.gmp``), then fine-tuning with the masks fixed. Writes
``artifacts/spdy/<model>/gmp/<target>x-<profile>-s<seed>.safetensors`` and its JSON sidecar
(test accuracy, each layer's sparsity from the masks, the history).

``spdy_results`` gathers them and measures every pruned model's speedup end to end: the dense
model and the pruned one, both as :class:`~pruneflow.timing.SparseRuntime` (the pruned one on
the backends the timing table chose per layer), timed alternately in one process at the timing
table's batch size and thread count, all models in several passes so that each one's figure
spans the whole measurement, not one moment of the host's drifting load. Measurement happens
here, not in the fan-out tasks, which may run concurrently and would disturb each other's
clocks. Writes
``results.parquet`` (:data:`RESULTS_COLUMNS`) and ``results.md`` (the paper's Table 4 layout).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pruneflow import layout
from pruneflow.checkpoint import load_checkpoint, save_checkpoint, sidecar
from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.io import atomic_path, read_json, read_parquet, write_json, write_parquet
from pruneflow.metrics import spdy_metrics
from pruneflow.recon import ReconstructionDB
from pruneflow.runtime import configure, progress_enabled
from pruneflow.sparsity.gmp import GmpSchedule, check_schedule, gradual_prune
from pruneflow.spdy.dp import predicted_speedup
from pruneflow.spdy.paths import RESULTS_COLUMNS, results_file, results_markdown
from pruneflow.stats import mean_interval, paired_by_seed
from pruneflow.steps import recondb as recondb_step
from pruneflow.steps import spdy as spdy_step
from pruneflow.steps.base import Item, Step
from pruneflow.steps.data import load_data, read_labels
from pruneflow.steps.spdy_inputs import (
    dense_model,
    inputs_of_dense,
    measured_speedups,
    spdy_layers,
    timing_batch,
)
from pruneflow.steps.timing import grid_levels
from pruneflow.timing import (
    SparseRuntime,
    host_description,
    read_timing_table,
    time_matrix,
)
from pruneflow.train import evaluate

GMP_KEYS = tuple(
    f"spdy.gmp.{k}"
    for k in (
        "start_epoch",
        "end_epoch",
        "finetune_epochs",
        "every_steps",
        "batch_size",
        "lr",
        "init_from_db",
    )
)


def run_items(p: Params) -> list[dict[str, Any]]:
    g = p.spdy.gmp
    return [
        {"target": float(t), "profile": name, "seed": int(seed)}
        for t, name, seed in itertools.product(p.spdy.targets, g.profiles, g.seeds)
    ]


def _check_item(p: Params, item: Item) -> dict[str, Any]:
    if item not in run_items(p):
        raise PruneflowError(
            f"spdy_gmp: {item} is not one of the runs spdy.targets x spdy.gmp.profiles x "
            f"spdy.gmp.seeds ({len(run_items(p))} runs)"
        )
    return dict(item)  # type: ignore[arg-type]


def run_checkpoint(p: Params, item: Item) -> Path:
    it = _check_item(p, item)
    name = f"{layout.target_name(it['target'])}-{it['profile']}-s{it['seed']}.safetensors"
    return layout.spdy_dir(p) / "gmp" / name


def run_epochs(p: Params) -> float:
    """A gradual-pruning run's length: pruning to end_epoch, then fine-tuning (fractional ok)."""
    return p.spdy.gmp.end_epoch + p.spdy.gmp.finetune_epochs


def train_config(p: Params, seed: int) -> Any:
    """spdy.train's recipe with gradual pruning's learning rate, batch and seed; the run's
    length is :func:`run_epochs` (gradual_prune's ``epochs``)."""
    g = p.spdy.gmp
    update: dict[str, Any] = {"lr": g.lr, "seed": seed}
    if g.batch_size is not None:
        update["batch_size"] = g.batch_size
    return p.train.model_copy(update=update)


def _schedule(p: Params) -> GmpSchedule:
    g = p.spdy.gmp
    return GmpSchedule(start_epoch=g.start_epoch, end_epoch=g.end_epoch, every_steps=g.every_steps)


def profile_sparsities(p: Params, target: float, profile: str) -> dict[str, float]:
    """layer -> final sparsity of one one-shot profile (profiles.parquet)."""
    path = spdy_step.profiles_file(p)
    table = read_parquet(path, spdy_step.PROFILES_COLUMNS)
    rows = table[(table["target"] == target) & (table["profile"] == profile)]
    if rows.empty:
        raise PruneflowError(f"{path} has no '{profile}' profile for target {target:g}x")
    return dict(zip(rows["layer"], rows["sparsity"].astype(float), strict=True))


def _run_compute(p: Params, item: Item) -> dict[str, Any]:
    configure(p.runtime.threads, p.runtime.flush_denormal)
    it = _check_item(p, item)
    cfg = train_config(p, it["seed"])
    targets = profile_sparsities(p, it["target"], it["profile"])
    check_schedule(_schedule(p), run_epochs(p), targets)  # before any training
    model = dense_model(p)
    layers = spdy_layers(p, model)
    if sorted(targets) != sorted(layers):
        raise PruneflowError(
            f"profile {it['profile']} at {it['target']:g}x names layers {sorted(targets)}, "
            f"{p.model.name} prunes {sorted(layers)}"
        )
    if p.spdy.gmp.init_from_db:
        levels = {n: grid_levels(p).index(s) for n, s in targets.items()}
        ReconstructionDB.open(layout.recondb_dir(p), model=model).stitch(model, levels)
    frame, meta = read_labels(p)
    data = load_data(p)
    split = frame["split"].to_numpy()
    train_idx = np.flatnonzero(split == "train")
    masks, history = gradual_prune(
        model,
        data,
        train_idx,
        frame["label"].to_numpy(),
        targets,
        cfg,
        _schedule(p),
        progress=progress_enabled(p.runtime.progress),
        epochs=run_epochs(p),
    )
    test_idx = np.flatnonzero(split == "test")
    acc = evaluate(model, data, test_idx, frame["true_label"].to_numpy())[1]
    sparsity = {n: float(1.0 - m.float().mean()) for n, m in masks.items()}
    arch = {"name": p.model.name, "num_classes": data.num_classes, "in_shape": list(data.in_shape)}
    info = {
        **it,
        "test_acc": acc,
        "layer_sparsity": sparsity,
        "profile_sparsity": targets,
        "init_from_db": p.spdy.gmp.init_from_db,
        "history": {"loss": history.loss, "acc": history.acc},
    }
    save_checkpoint(run_checkpoint(p, it), model, arch, info)
    return {"test_acc": acc, **it}


def _run_inputs(p: Params, item: Item) -> list[Path]:
    _check_item(p, item)  # a wrong item is named before any missing input
    db = [recondb_step.index_path(p)] if p.spdy.gmp.init_from_db else []
    return [*inputs_of_dense(p), spdy_step.profiles_file(p), *db]


def _run_outputs(p: Params, item: Item) -> list[Path]:
    ckpt = run_checkpoint(p, item)
    return [ckpt, sidecar(ckpt)]


SPDY_GMP = Step(
    name="spdy_gmp",
    reads=(
        "data.dataset",
        "data.root",
        "data.image_size",
        "model.name",
        "spdy.grid",
        *(
            f"train.{k}"
            for k in (
                "batch_size",
                "optimizer",
                "momentum",
                "weight_decay",
                "schedule",
                "step_size",
                "gamma",
            )
        ),
        *GMP_KEYS,
    ),
    inputs=_run_inputs,
    outputs=_run_outputs,
    compute=_run_compute,
    description="gradual magnitude pruning to one profile at one target (one seed)",
    fan_out=True,
    items=run_items,
)


def _results_compute(p: Params) -> dict[str, Any]:
    configure(p.runtime.threads, p.runtime.flush_denormal)
    model = dense_model(p)
    layers = spdy_layers(p, model)
    # a plan's measured speedup is only a claim about the host its timing table came from
    table, meta = read_timing_table(
        layout.timing_table(p), p.model.name, layers, host=host_description(p.spdy.timing.threads)
    )
    times = time_matrix(table, layers)
    grid = grid_levels(p)
    dense_acc = float(read_json(sidecar(layout.dense_checkpoint(p)))["metrics"]["test_acc"])
    frame, _ = read_labels(p)
    x = timing_batch(p, meta)
    dense = SparseRuntime(model, "dense", example=x)
    items = run_items(p)
    paths = [run_checkpoint(p, item) for item in items]
    pruned = [SparseRuntime.from_table(load_checkpoint(path)[0].eval(), table) for path in paths]
    measured = measured_speedups(p, meta, dense, pruned, x)
    rows = []
    for item, path, speedup in zip(items, paths, measured, strict=True):
        info = read_json(sidecar(path))
        levels = [grid.index(info["profile_sparsity"][n]) for n in layers]
        rows.append(
            {
                "model": p.model.name,
                "target": item["target"],
                "profile": item["profile"],
                "dense_acc": dense_acc,
                "acc": float(info["test_acc"]),
                "predicted_speedup": predicted_speedup(
                    times, levels, float(meta["dense_total_ms"]), float(times[:, 0].sum())
                ),
                "measured_speedup": speedup,
                "seed": item["seed"],
            }
        )
    results = pd.DataFrame(rows, columns=list(RESULTS_COLUMNS))
    write_parquet(results_file(p), results, {"model": p.model.name, "host": meta.get("host")})
    test_size = int((frame["split"] == "test").sum())
    with atomic_path(results_markdown(p)) as tmp:
        tmp.write_text(results_table_markdown(results, test_size))
    oneshot = read_parquet(spdy_step.oneshot_file(p), spdy_step.ONESHOT_COLUMNS)
    write_json(layout.metrics_file(p, "spdy_results"), spdy_metrics(results, oneshot))
    spdy = results[results["profile"] == "spdy"]
    ratio = spdy["measured_speedup"] / spdy["target"]
    return {
        "runs": len(results),
        "min_spdy_measured_over_target": float(ratio.min()) if len(ratio) else None,
        "table": results.to_dict(orient="records"),  # unrounded: the CLI prints it
        "test_size": test_size,
    }


def results_table(
    results: pd.DataFrame, test_size: int | None = None
) -> tuple[list[str], list[list[str]]]:
    """The paper's Table 4 as (header, rows), one row per (model, target, profile): runs, mean
    test accuracy with its 95% interval, the paired difference to the uniform profile with its
    interval (:mod:`pruneflow.stats`; ``test_size`` adds the test sample's binomial error), and
    the measured (predicted) speedup."""
    head = [
        "model",
        "dense acc. %",
        "target",
        "profile",
        "n",
        "acc. % [95% CI]",
        "minus uniform [95% CI]",
        "measured (predicted)",
    ]
    profiles = list(dict.fromkeys(results["profile"]))
    rows = []
    for (model, target), part in results.groupby(["model", "target"], sort=True):
        for i, name in enumerate(n for n in profiles if (part["profile"] == n).any()):
            runs = part[part["profile"] == name]
            acc = mean_interval(runs["acc"].tolist(), test_size)
            diff = None
            if name != "uniform":
                base = part[part["profile"] == "uniform"]
                diff = paired_by_seed(
                    runs.set_index("seed")["acc"].to_dict(),
                    base.set_index("seed")["acc"].to_dict(),
                    test_size,
                )
            rows.append(
                [
                    str(model) if i == 0 else "",
                    f"{100 * part['dense_acc'].iloc[0]:.2f}" if i == 0 else "",
                    f"{target:g}x" if i == 0 else "",
                    str(name),
                    str(len(runs)),
                    acc.format(scale=100.0),
                    "-" if diff is None else diff.format(scale=100.0, signed=True),
                    f"{runs['measured_speedup'].mean():.2f}x "
                    f"({runs['predicted_speedup'].mean():.2f}x)",
                ]
            )
    return head, rows


def results_table_markdown(results: pd.DataFrame, test_size: int | None = None) -> str:
    head, rows = results_table(results, test_size)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


SPDY_RESULTS = Step(
    name="spdy_results",
    reads=(
        "data.dataset",
        "data.root",
        "data.image_size",
        "model.name",
        "spdy.grid",
        "spdy.targets",
        "spdy.gmp",
    ),
    inputs=lambda p: [
        *inputs_of_dense(p),
        layout.timing_table(p),
        spdy_step.oneshot_file(p),
        *(f for item in run_items(p) for f in _run_outputs(p, item)),
    ],
    outputs=lambda p: [
        results_file(p),
        results_markdown(p),
        layout.metrics_file(p, "spdy_results"),
    ],
    compute=_results_compute,
    description="accuracy and measured speedup of every gradually pruned model -> results",
    # measured speedups belong to this host: another machine's are never a cache hit
    environment=lambda p: host_description(p.spdy.timing.threads),
)
