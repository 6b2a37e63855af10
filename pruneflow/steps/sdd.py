"""Steps of the sparse double descent sweep (He et al., ICML'22).

All take the sdd view of the params (``scoped(params, "sdd:MODEL")``: data set, noise rate,
model and the dense ``train`` section come from ``sdd``):

``sdd_dense``  (fan-out, item ``{"seed": s}``) dense training on the noisy labels; saves the
               initial weights, the rewind point (epoch ``sdd.rewind_epoch``) and the trained
               weights in one file, and the level-0 record.
``sdd_level``  (fan-out, item ``{"method", "mode", "seed", "level"}``) one pruning round:
               a finetune or rewind level L reads its own chain's level L-1 checkpoint
               (weights + masks; level 0 = the dense file), prunes to ``1 - (1 - f)^L``,
               retrains by ``mode``, evaluates, writes level L's checkpoint and record. A
               reinit level L does not prune: it takes the rewind chain's level-L masks and
               retrains them from fresh random weights, as the authors' code does (He et al.,
               ICML'22, ``randomly_reinitialize.py``), so rewind and reinit differ in the
               start weights only. Each level is its own cached item, so a chain that crashed
               at level 14 resumes at 14; the runs of :func:`chains` are independent and may
               run concurrently.
``sdd_sweep``  gathers every record into ``sweep.parquet``, labels the phases
               (``phases.parquet``, boundaries also in the sweep table's metadata), writes the
               rewind-vs-reinit table (``lottery.parquet``) and the DVC metrics.
``sdd_plots``  the PNG figures under ``artifacts/reports/`` and their data as small CSVs
               (``curves/``, :mod:`pruneflow.sdd.exports`) for DVC's ``plots``.

Every step writes the same files whatever ``sdd.methods`` / ``sdd.modes`` / ``sdd.seeds``
hold, so dvc.yaml's outs are true for every params value. ``lottery.parquet``, its CSV and its
figure are written even when ``sdd.modes`` lacks rewind or reinit: the table keeps its schema
(:data:`pruneflow.sdd.sweep.LOTTERY_COLUMNS`) with the missing mode's columns null (no rows
when neither ran), and the figure shows the mode that ran and says what is missing.

Seeds: sweep seed ``s`` (``sdd.seeds``) fixes every random choice of its chains through
:func:`pruneflow.sdd.retrain.derive_seed` (initial weights, batch order per level, random
scores, re-initialisations); ``sdd.train.seed`` and ``sdd.retrain.seed`` are not used.

Artifacts (``A`` = ``artifacts/sdd/<dataset>-<model>``)::

  A/dense/seed<s>.safetensors + seed<s>.json
  A/levels/seed<s>/<method>-<mode>/level<LL>.safetensors + level<LL>.json
  A/sweep.parquet  A/phases.parquet  A/lottery.parquet
  A/curves/{test_acc,train_acc,learning_distance,lottery}.csv
  artifacts/reports/sdd-<dataset>-<model>-{accuracy,distance,lottery}.png
  metrics/sdd_sweep/<dataset>-<model>.json
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pruneflow import config, layout, wallclock
from pruneflow.config import SDD_METHODS, SDD_MODES, Params
from pruneflow.errors import PruneflowError
from pruneflow.io import write_json, write_parquet
from pruneflow.models import build
from pruneflow.models.layers import pruned_layers
from pruneflow.runtime import configure, progress_enabled
from pruneflow.sdd import exports, plots
from pruneflow.sdd.distance import learning_distance
from pruneflow.sdd.evaluation import Splits, level_metrics
from pruneflow.sdd.paths import (
    curve_files,
    dense_file,
    level_file,
    lottery_file,
    phases_file,
    plot_files,
    read_level_record,
    read_sweep,
    record_file,
    sweep_file,
)
from pruneflow.sdd.retrain import (
    apply_start,
    clone_state,
    derive_seed,
    fresh_state,
    full_masks,
    prune,
    retrain,
    start_state,
    train_with_rewind_point,
)
from pruneflow.sdd.schedule import level_sparsity, num_levels
from pruneflow.sdd.state import load_state, require, save_state
from pruneflow.sdd.sweep import (
    LOTTERY_MODES,
    add_phases,
    boundaries,
    lottery_table,
    mean_curves,
    sweep_table,
)
from pruneflow.sparsity.masks import sparsity as mask_sparsity
from pruneflow.steps.base import Record, Step, say
from pruneflow.steps.data import PREPARE, load_data, read_labels
from pruneflow.steps.dense import (
    DATA_KEYS,
    TRAIN_KEYS,
    load_user_weights,
    weights_inputs,
)
from pruneflow.train import seeded_build

Item = dict[str, Any]
_LEVEL_KEYS = {"method", "mode", "seed", "level"}
# reinit retrains the masks this mode's chain found at the same level
_MASK_SOURCE = {"reinit": "rewind"}


# ---- items ----------------------------------------------------------------------------------
def dense_items(p: Params) -> list[Item]:
    return [{"seed": s} for s in p.sdd.seeds]  # type: ignore[attr-defined]


def curves(p: Params) -> list[list[Item]]:
    """One list of level items (1..n, in order) per (seed, method, mode) curve of the sweep."""
    sdd = p.sdd  # type: ignore[attr-defined]
    n = num_levels(sdd.prune_fraction, sdd.final_sparsity)
    return [
        [{"method": m, "mode": mode, "seed": s, "level": level} for level in range(1, n + 1)]
        for s in sdd.seeds
        for m in sdd.methods
        for mode in sdd.modes
    ]


def chains(p: Params) -> list[list[Item]]:
    """The sweep's runs of levels that must go in order, independent of each other.

    Per (seed, method): each mode's curve on its own, except that reinit level L needs the
    rewind chain's level L (its masks), so the rewind and reinit curves run as one chain,
    rewind 1, reinit 1, rewind 2, reinit 2, ...
    """
    out: list[list[Item]] = []
    for curve in curves(p):
        mode = curve[0]["mode"] if curve else None
        if mode in _MASK_SOURCE:
            continue
        partners = [
            c
            for c in curves(p)
            if c
            and _MASK_SOURCE.get(c[0]["mode"]) == mode
            and (c[0]["method"], c[0]["seed"]) == (curve[0]["method"], curve[0]["seed"])
        ]
        out.append([item for row in zip(curve, *partners, strict=True) for item in row])
    return out


def _check_seed(item: Item) -> int:
    if not isinstance(item, dict) or "seed" not in item:
        raise PruneflowError(f"sdd item {item!r}: needs a 'seed'")
    seed = item["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PruneflowError(f"sdd item {item}: seed must be an integer >= 0")
    return seed


def _check_level_item(item: Item) -> None:
    if set(item) != _LEVEL_KEYS:
        raise PruneflowError(
            f"sdd_level item {item}: expected keys {sorted(_LEVEL_KEYS)}, got {sorted(item)}"
        )
    if item["method"] not in SDD_METHODS:
        raise PruneflowError(
            f"sdd_level item {item}: unknown pruning method '{item['method']}' "
            f"(choose {', '.join(SDD_METHODS)})"
        )
    if item["mode"] not in SDD_MODES:
        raise PruneflowError(
            f"sdd_level item {item}: unknown retrain mode '{item['mode']}' "
            f"(choose {', '.join(SDD_MODES)})"
        )
    _check_seed(item)
    level = item["level"]
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise PruneflowError(f"sdd_level item {item}: level must be an integer >= 1")


def _previous(item: Item) -> Item:
    """The level whose checkpoint ``item`` starts from: its chain's previous level, or for
    reinit the mask-source chain's same level."""
    if item["mode"] in _MASK_SOURCE:
        return {**item, "mode": _MASK_SOURCE[item["mode"]]}
    return {**item, "level": item["level"] - 1}


# ---- sdd_dense ------------------------------------------------------------------------------
def _arch(p: Params, num_classes: int, in_shape: tuple[int, ...]) -> dict[str, Any]:
    return {"name": p.model.name, "num_classes": num_classes, "in_shape": list(in_shape)}


def _dense_compute(p: Params, item: Item) -> dict[str, Any]:
    if set(item) != {"seed"}:
        raise PruneflowError(f"sdd_dense item {item}: expected only the key 'seed'")
    seed = _check_seed(item)
    rewind_epoch = p.sdd.rewind_epoch  # type: ignore[attr-defined]
    if rewind_epoch > p.train.epochs:  # pydantic checks sdd.*; a hand-scoped train may not match
        raise PruneflowError(
            f"sdd.rewind_epoch = {rewind_epoch} is beyond dense training "
            f"(sdd.train.epochs = {p.train.epochs})"
        )
    configure(p.runtime.threads, p.runtime.flush_denormal)
    frame, _ = read_labels(p)
    data = load_data(p)
    splits = Splits(frame)
    if p.model.weights is not None and rewind_epoch > 0:
        raise PruneflowError(
            f"sdd.rewind_epoch = {rewind_epoch} rewinds to an epoch of dense training, which "
            f"sdd.weights skips for {p.model.name}: set sdd.rewind_epoch to 0"
        )
    model = seeded_build(
        p.model.name, data.num_classes, data.in_shape, derive_seed(seed, 0, "init")
    )
    layers = sweep_layers(p, model)
    cfg = p.train.model_copy(update={"seed": derive_seed(seed, 0, "train")})
    init = clone_state(model)
    # the user's trained checkpoint replaces dense training; the rewind point (epoch 0) is
    # then the seed's initialisation, as it is for a trained run
    source = load_user_weights(p, model)
    if source is None:
        with wallclock.timed("train"):
            history, init, rewind = train_with_rewind_point(
                model,
                data,
                splits.train,
                splits.noisy,
                cfg,
                rewind_epoch,
                progress_enabled(p.runtime.progress),
                f"sdd dense {p.model.name} seed {seed}",
            )
    else:
        history, rewind = None, {k: v.clone() for k, v in init.items()}
    final = clone_state(model)
    record = {
        "level": 0,
        "seed": seed,
        "sparsity": 0.0,
        "remaining": int(sum(final[f"{n}.weight"].numel() for n in layers)),
        **level_metrics(model, data, splits),
        "learning_distance": learning_distance(init, final, None, layers),
        "target_sparsity": 0.0,
        "final_epoch_loss": history.loss[-1] if history else None,
        "history": {"loss": history.loss, "acc": history.acc} if history else None,
    }
    path = dense_file(p, seed)
    info = {"step": "sdd_dense", "seed": seed, "rewind_epoch": rewind_epoch, "weights": source}
    save_state(
        path,
        {"weight": final, "init": init, "rewind": rewind},
        _arch(p, data.num_classes, data.in_shape),
        info,
    )
    write_json(record_file(path), record)  # last: the record marks the level complete
    # the record's keys are the sweep table's columns: the weights' origin stays in the file
    return {**{k: v for k, v in record.items() if k != "history"}, "weights": source}


def sweep_layers(p: Params, model: Any) -> list[str]:
    """The layers the sweep prunes: every Conv2d/Linear (He et al. prune globally), narrowed
    by ``sdd.include`` / ``sdd.exclude``; the others stay dense and out of the sparsity."""
    sdd = p.sdd  # type: ignore[attr-defined]
    return pruned_layers(model, p.model.name, False, sdd.include, sdd.exclude)


# the dense run's seed comes from the item (sdd.seeds), not from train.seed
_DENSE_READS = (
    *DATA_KEYS,
    "model.name",
    "model.weights",
    *(key for key in TRAIN_KEYS if key != "train.seed"),
    "sdd.rewind_epoch",
    "sdd.include",
    "sdd.exclude",
)

SDD_DENSE = Step(
    name="sdd_dense",
    reads=_DENSE_READS,
    inputs=lambda p, item: [layout.labels_table(p), *weights_inputs(p)],
    outputs=lambda p, item: [dense_file(p, item["seed"]), record_file(dense_file(p, item["seed"]))],
    compute=_dense_compute,
    description="sdd: dense training on noisy labels, keeping the init and rewind-point weights "
    "(or sdd.weights loaded)",
    fan_out=True,
    items=dense_items,
)


# ---- sdd_level ------------------------------------------------------------------------------
def _level_inputs(p: Params, item: Item) -> list[Path]:
    _check_level_item(item)
    paths = [layout.labels_table(p), dense_file(p, item["seed"]), level_file(p, _previous(item))]
    return list(dict.fromkeys(paths))


def _level_outputs(p: Params, item: Item) -> list[Path]:
    _check_level_item(item)
    return [level_file(p, item), record_file(level_file(p, item))]


def _check_chain(
    path: Path,
    arch: dict[str, Any],
    info: dict[str, Any],
    p: Params,
    data_arch: dict[str, Any],
    prev: Item,
) -> None:
    if arch != data_arch:
        raise PruneflowError(f"{path} holds {arch}, but this sweep builds {data_arch}")
    if prev["level"] == 0:
        expected = {"seed": prev["seed"]}
    else:
        expected = {k: prev[k] for k in _LEVEL_KEYS}
    found = {k: info.get(k) for k in expected}
    if found != expected:
        raise PruneflowError(f"{path} belongs to {found}, not to {expected}: wrong chain")


def _gradient_batches(p: Params, data: Any, splits: Splits, item: Item) -> list | None:
    if item["method"] != "gradient":
        return None
    bs = p.sdd.retrain.batch_size  # type: ignore[attr-defined]
    n = min(splits.train.size, p.sdd.gradient_batches * bs)  # type: ignore[attr-defined]
    rng = np.random.default_rng(derive_seed(item["seed"], item["level"], "batches"))
    chosen = rng.permutation(splits.train)[:n]
    # scored on the labels the net is trained on: the noisy ones
    return list(data.batches(chosen, splits.noisy, bs))


def _level_compute(p: Params, item: Item) -> dict[str, Any]:
    _check_level_item(item)
    sdd = p.sdd  # type: ignore[attr-defined]
    seed, level, mode = item["seed"], item["level"], item["mode"]
    configure(p.runtime.threads, p.runtime.flush_denormal)
    frame, _ = read_labels(p)
    data = load_data(p)
    splits = Splits(frame)
    want_arch = _arch(p, data.num_classes, data.in_shape)

    prev_path = level_file(p, _previous(item))
    prev, arch, info = load_state(prev_path)
    _check_chain(prev_path, arch, info, p, want_arch, _previous(item))
    require(prev, prev_path, "weight")
    rewind = None
    if mode == "rewind":
        dense, d_arch, d_info = load_state(dense_file(p, seed))
        _check_chain(dense_file(p, seed), d_arch, d_info, p, want_arch, {"seed": seed, "level": 0})
        require(dense, dense_file(p, seed), "rewind")
        rewind = dense["rewind"]

    model = build(arch["name"], arch["num_classes"], tuple(arch["in_shape"]))
    model.load_state_dict(prev["weight"])
    layers = sweep_layers(p, model)
    target = level_sparsity(sdd.prune_fraction, level)
    if mode in _MASK_SOURCE:  # the source chain's masks at this level, pruned there already
        require(prev, prev_path, "mask")
        new_masks = prev["mask"]
    else:
        new_masks = prune(
            model,
            prev.get("mask") or full_masks(model, layers),
            item["method"],
            target,
            sdd.scope,
            seed=derive_seed(seed, level, "scores"),
            batches=_gradient_batches(p, data, splits, item),
        )
    fresh = (
        fresh_state(
            arch["name"],
            arch["num_classes"],
            tuple(arch["in_shape"]),
            derive_seed(seed, level, "init"),
        )
        if mode == "reinit"
        else None
    )
    start = apply_start(model, start_state(mode, prev["weight"], rewind, fresh), new_masks)
    cfg = sdd.retrain.model_copy(update={"seed": derive_seed(seed, level, "train")})
    with wallclock.timed("train"):
        history = retrain(
            model,
            new_masks,
            data,
            splits.train,
            splits.noisy,
            cfg,
            progress=progress_enabled(p.runtime.progress),
            description=f"sdd {item['method']}/{mode} seed {seed} level {level}",
        )
    learned = clone_state(model)
    record = {
        "method": item["method"],
        "retrain": mode,
        "seed": seed,
        "level": level,
        "sparsity": mask_sparsity(new_masks),
        "target_sparsity": target,
        "remaining": int(sum(int(m.sum()) for m in new_masks.values())),
        **level_metrics(model, data, splits),
        "learning_distance": learning_distance(start, learned, new_masks, layers),
        "final_epoch_loss": history.loss[-1],
    }
    path = level_file(p, item)
    save_state(path, {"weight": learned, "mask": new_masks}, arch, {**item, "step": "sdd_level"})
    write_json(record_file(path), record)  # last: the record marks the level complete
    return record


SDD_LEVEL = Step(
    name="sdd_level",
    reads=(
        "data.dataset",
        "data.root",
        "data.image_size",
        "model.name",
        "sdd.retrain",
        "sdd.scope",
        "sdd.prune_fraction",
        "sdd.gradient_batches",
        "sdd.include",
        "sdd.exclude",
    ),
    inputs=_level_inputs,
    outputs=_level_outputs,
    compute=_level_compute,
    description="sdd: one pruning round (prune, restart by mode, retrain under masks, evaluate)",
    fan_out=True,
    items=lambda p: [item for chain in chains(p) for item in chain],
)


# ---- sdd_sweep ------------------------------------------------------------------------------
def _sweep_inputs(p: Params) -> list[Path]:
    paths = [record_file(dense_file(p, s)) for s in p.sdd.seeds]  # type: ignore[attr-defined]
    paths += [record_file(level_file(p, item)) for curve in curves(p) for item in curve]
    return paths


def _sweep_outputs(p: Params) -> list[Path]:
    return [sweep_file(p), phases_file(p), lottery_file(p), layout.metrics_file(p, "sdd_sweep")]


def gather_records(p: Params) -> list[dict[str, Any]]:
    """Every level record of the sweep; each curve starts with its seed's dense record."""
    seeds = p.sdd.seeds  # type: ignore[attr-defined]
    dense = {s: read_level_record(record_file(dense_file(p, s))) for s in seeds}
    records = []
    for curve in curves(p):
        first = curve[0]
        base = {k: v for k, v in dense[first["seed"]].items() if k != "history"}
        records.append({**base, "method": first["method"], "retrain": first["mode"]})
        records += [read_level_record(record_file(level_file(p, item))) for item in curve]
    return records


def _sweep_compute(p: Params) -> dict[str, Any]:
    sdd = p.sdd  # type: ignore[attr-defined]
    table, phases = add_phases(
        sweep_table(gather_records(p)), sdd.phases.standard_errors, sdd.phases.smooth
    )
    bounds = boundaries(phases)
    meta = {
        "dataset": p.data.dataset,
        "model": p.model.name,
        "noise_rate": p.noise.rate,
        "noise_kind": p.noise.kind,
        "prune_fraction": sdd.prune_fraction,
        "final_sparsity": sdd.final_sparsity,
        "scope": sdd.scope,
        "rewind_epoch": sdd.rewind_epoch,
        "retrain": sdd.retrain.model_dump(),
        "phase_rule": sdd.phases.model_dump(),
        "phases": bounds,
    }
    write_parquet(sweep_file(p), table, metadata=meta)
    write_parquet(
        phases_file(p), phases, metadata={"dataset": p.data.dataset, "model": p.model.name}
    )
    summary: dict[str, Any] = {
        "levels": int(table["level"].max()),
        "final_sparsity": float(table["sparsity"].max()),
        "dense_test_acc": float(table.loc[table["level"] == 0, "test_acc"].mean()),
        "curves": {},
    }
    for (method, retrain_mode, seed), curve in table.groupby(["method", "retrain", "seed"]):
        best = curve.loc[curve["test_acc"].idxmax()]
        summary["curves"][f"{method}/{retrain_mode}/seed{seed}"] = {
            "double_descent": bounds[f"{method}/{retrain_mode}/seed{seed}"]["double_descent"],
            "best_test_acc": float(best["test_acc"]),
            "best_sparsity": float(best["sparsity"]),
            "min_test_acc": float(curve["test_acc"].min()),
        }
    if table["seed"].nunique() > 1:
        for (method, retrain_mode), curve in mean_curves(table).groupby(["method", "retrain"]):
            best = curve.loc[curve["test_acc"].idxmax()]
            summary["curves"][f"{method}/{retrain_mode}/mean"] = {
                "double_descent": bounds[f"{method}/{retrain_mode}/mean"]["double_descent"],
                "best_test_acc": float(best["test_acc"]),
                "best_sparsity": float(best["sparsity"]),
                "min_test_acc": float(curve["test_acc"].min()),
            }
    comparison = lottery_table(table, phases)
    compared = [m for m in LOTTERY_MODES if comparison[f"{m}_test_acc"].notna().any()]
    write_parquet(
        lottery_file(p),
        comparison,
        metadata={"dataset": p.data.dataset, "model": p.model.name, "modes": compared},
    )
    if len(compared) == len(LOTTERY_MODES):
        summary["levels_reinit_beats_rewind"] = int((comparison["reinit_minus_rewind"] > 0).sum())
    write_json(layout.metrics_file(p, "sdd_sweep"), {**summary, "phases": bounds})
    return summary


SDD_SWEEP = Step(
    name="sdd_sweep",
    reads=(
        "data.dataset",
        "model.name",
        "noise.rate",
        "noise.kind",
        "sdd.methods",
        "sdd.modes",
        "sdd.seeds",
        "sdd.prune_fraction",
        "sdd.final_sparsity",
        "sdd.phases",
        "sdd.scope",
        "sdd.rewind_epoch",
        "sdd.retrain",
    ),
    inputs=_sweep_inputs,
    outputs=_sweep_outputs,
    compute=_sweep_compute,
    description="sdd: gather the levels into sweep.parquet, label phases, lottery table",
)


# ---- sdd_plots ------------------------------------------------------------------------------
def _plots_compute(p: Params) -> dict[str, Any]:
    table, phases, meta = read_sweep(p)
    title = plots.plot_title(p, meta)
    files = plot_files(p)
    plots.accuracy_figure(table, phases, files["accuracy"], f"Sparse double descent: {title}")
    plots.distance_figure(table, phases, files["distance"], f"Learning distance: {title}")
    plots.lottery_figure(table, phases, files["lottery"], f"Lottery vs re-init: {title}")
    csvs = curve_files(p)
    exports.write_curves(table, phases, csvs)
    return {name: str(path) for name, path in {**files, **csvs}.items()}


SDD_PLOTS = Step(
    name="sdd_plots",
    reads=("data.dataset", "model.name", "noise.rate"),
    inputs=lambda p: [sweep_file(p), phases_file(p)],
    outputs=lambda p: [*plot_files(p).values(), *curve_files(p).values()],
    compute=_plots_compute,
    data_files=("pruneflow/sdd/dvc_curves.json",),  # exports.TEMPLATE
    description="sdd: accuracy / learning-distance / lottery figures (PNG) and their CSVs",
)

SDD_STEPS = (SDD_DENSE, SDD_LEVEL, SDD_SWEEP, SDD_PLOTS)


# ---- running without an orchestrator --------------------------------------------------------
def run_chain(
    p: Params, chain: list[Item], force: bool = False, tick: Callable[[], None] | None = None
) -> list[Record]:
    """The levels of one (method, mode, seed) chain in order (``p`` already sdd-scoped).

    A level whose fingerprint is cached is skipped, so after a crash this resumes at the first
    level without a complete checkpoint.
    """
    records = []
    for item in chain:
        records.append(SDD_LEVEL.run(p, force=force, item=item))
        if tick is not None:
            tick()
    return records


def run_sweep(
    params: Params, model: str | None = None, force: bool = False, plots: bool = True
) -> list[Record]:
    """Every step of one model's sweep in order, in this process (benches, tests, debugging).

    ``params`` is the unscoped params; ``model`` defaults to the first of ``sdd.models``;
    ``plots=False`` stops after the sweep table. The flow does the same through Prefect, with
    the chains concurrent.
    """
    model = model or params.sdd.models[0]  # type: ignore[attr-defined]
    p = config.scoped(params, f"sdd:{model}")
    records = [PREPARE.run(p)]
    records += [SDD_DENSE.run(p, force=force, item=item) for item in dense_items(p)]
    all_chains = chains(p)
    with Progress(
        TextColumn("[bold]sdd levels"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not progress_enabled(p.runtime.progress),
        transient=True,
    ) as bar:
        task = bar.add_task("levels", total=sum(len(c) for c in all_chains))
        for chain in all_chains:
            records += run_chain(p, chain, force, lambda: bar.advance(task))
    records.append(SDD_SWEEP.run(p, force=force))
    if plots:
        records.append(SDD_PLOTS.run(p, force=force))
    say(f"  sdd sweep {p.data.dataset}-{model}: {sweep_file(p)}")
    return records
