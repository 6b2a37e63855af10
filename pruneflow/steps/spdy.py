"""Steps ``spdy_search`` (one per speedup target) and ``spdy_oneshot``: SPDY's profiles.

``spdy_search`` (item ``{"target": 2.0}``): the timing table gives each layer's time per level,
discretized into ``spdy.search.buckets`` buckets of the time budget for the target; the
sensitivity search (``pruneflow.spdy.search``) scores every candidate profile by stitching it
from the reconstruction database and measuring the calibration loss. Writes

- ``artifacts/spdy/<model>/targets/<target>x/profile.parquet``: :data:`PROFILE_COLUMNS`, one row per
  layer SPDY prunes (``error_score``: the DP's error term ``c_l * (i / (|S|-1))^2`` of the
  chosen level);
- ``artifacts/spdy/<model>/targets/<target>x/search.parquet``: :data:`SEARCH_COLUMNS`, one row per
  candidate (``pred_time_ms``: the candidate's prunable-layer time from the rounded table).

The search checkpoints its state after every candidate under
``.pruneflow/spdy-search/<fingerprint>.json``; a crash mid-search resumes at the next candidate
and ends with the same profile as an uninterrupted run (the state holds the generator).

``spdy_oneshot``: per target, SPDY's profile beside ``uniform``, ``gmp`` (global magnitude)
and ``prior`` (the DP with ``c = 1``) at the same discretized budget, every one stitched from
the same database: ``oneshot.parquet`` (:data:`ONESHOT_COLUMNS`), ``profiles.parquet``
(:data:`PROFILES_COLUMNS`, what gradual pruning starts from) and two figures under
``artifacts/reports/``. Test accuracy is measured with BatchNorm in eval mode. Every profile's
speedup is measured end to end and, if off its target, chosen again by its own rule for a
corrected target (``spdy.verify``, :mod:`pruneflow.spdy.verify`): the profiles are compared at
equal measured speedup. This step runs alone (not fanned out), so no sibling task disturbs the
clock.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from math import nan
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pruneflow import layout
from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.io import parquet_metadata, read_parquet, write_parquet
from pruneflow.recon import ReconstructionDB
from pruneflow.runtime import configure, progress_enabled, report_progress
from pruneflow.spdy.baselines import global_magnitude_profile, prior_profile, uniform_profile
from pruneflow.spdy.dp import Discretized, DPSolver, discretize
from pruneflow.spdy.paths import (
    ONESHOT_COLUMNS,
    PROFILE_COLUMNS,
    PROFILES_COLUMNS,
    SEARCH_COLUMNS,
    figure_files,
    oneshot_file,
    profile_file,
    profiles_file,
    search_file,
)
from pruneflow.spdy.plots import plot_profiles, plot_search
from pruneflow.spdy.scoring import CalibrationLoss
from pruneflow.spdy.search import (
    Profile,
    SearchResult,
    SearchState,
    errors_from_c,
    sensitivity_search,
    state_from_json,
    state_to_json,
)
from pruneflow.spdy.verify import Attempt, meet_measured_targets
from pruneflow.steps import recondb as recondb_step
from pruneflow.steps.base import Item, Step, state_dir
from pruneflow.steps.spdy_inputs import (
    CALIB_KEYS,
    MEASURE_KEYS,
    calibration_batches,
    dense_model,
    inputs_of_dense,
    measured_speedups,
    spdy_layers,
    test_accuracy,
    timing_batch,
)
from pruneflow.steps.timing import grid_levels
from pruneflow.timing import SparseRuntime, host_description, read_timing_table, time_matrix
from pruneflow.timing.runtime import WHOLE_MODEL

SEARCH_KEYS = tuple(
    f"spdy.search.{k}"
    for k in (
        "candidates",
        "delta",
        "max_no_improvement",
        "local_rule",
        "buckets",
        "bn",
        "calib_samples",
        "seed",
    )
)
READS = (
    "data.dataset",
    "data.root",
    "data.image_size",
    "model.name",
    "spdy.grid",
    *CALIB_KEYS,
    *SEARCH_KEYS,
)


def target_items(p: Params) -> list[dict[str, Any]]:
    return [{"target": float(t)} for t in p.spdy.targets]


def _target(p: Params, item: Item) -> float:
    target = (item or {}).get("target")
    if not isinstance(target, int | float) or float(target) not in p.spdy.targets:
        raise PruneflowError(
            f"spdy_search: target {target!r} is not one of spdy.targets {p.spdy.targets}"
        )
    return float(target)


def _inputs(p: Params) -> list[Path]:
    db = [recondb_step.index_path(p)]
    db += [recondb_step.layer_path(p, i["layer"]) for i in recondb_step.layer_items(p)]
    return [*inputs_of_dense(p), layout.timing_table(p), *db]


class Problem:
    """The dense model, the database and the timing table of one model, checked to agree."""

    def __init__(self, p: Params, *, measuring: bool = False):
        self.model = dense_model(p)
        self.layers = spdy_layers(p, self.model)
        self.grid = grid_levels(p)
        path = layout.timing_table(p)
        # a speedup measured here is only a claim about the host the table was measured on
        host = host_description(p.spdy.timing.threads) if measuring else None
        self.table, self.meta = read_timing_table(path, p.model.name, self.layers, host=host)
        table = self.table
        if self.meta.get("whole_model"):
            raise PruneflowError(
                f"{p.model.name} runs whole on torch ({self.meta['whole_model']}; {path}: "
                f"backend {WHOLE_MODEL}): masked layers save no time there, so no speedup "
                "target is reachable; a forward that calls its Conv2d/Linear modules can be "
                "taken apart"
            )
        stored = [float(v) for v in self.meta["levels"]]
        if len(stored) != len(self.grid) or not np.allclose(stored, self.grid, rtol=0, atol=1e-9):
            raise PruneflowError(
                f"{path} was measured on another sparsity grid ({len(stored)} levels) than "
                f"spdy.grid ({len(self.grid)} levels): run the profile step again"
            )
        self.times_ms = time_matrix(table, self.layers)
        root = layout.recondb_dir(p)
        self.db = ReconstructionDB.open(
            root, model=self.model, model_name=p.model.name, grid=self.grid
        )
        if self.db.layers != self.layers:
            raise PruneflowError(
                f"{root} holds layers {self.db.layers}, the timing table {self.layers}: "
                "rebuild the database for this model and grid"
            )

    def calibration_loss(self, p: Params) -> CalibrationLoss:
        """The scorer of candidate profiles: spdy.search's share of the calibration set."""
        s = p.spdy.search
        return CalibrationLoss(
            self.model, self.db, self.layers, calibration_batches(p, s.calib_samples), bn=s.bn
        )

    def discretize(self, p: Params, target: float) -> Discretized:
        try:
            return discretize(
                self.times_ms,
                float(self.meta["dense_total_ms"]),
                float(self.times_ms[:, 0].sum()),
                target,
                buckets=p.spdy.search.buckets,
            )
        except PruneflowError as err:
            model = p.model.name
            raise PruneflowError(
                f"{model}: {err}. Lower {p.spdy.targets_key(model)}, or re-time "
                f"the layers on a quieter host (`pruneflow profile --model {model} --force`): "
                "a busy CPU slows the sparse kernels more than the dense ones"
            ) from None


def run_search(
    p: Params,
    disc: Discretized,
    score: Callable[[Profile], float],
    resume: SearchState | None = None,
    checkpoint: Callable[[SearchState], None] | None = None,
    progress: bool = False,
) -> SearchResult:
    """The sensitivity search with ``spdy.search``'s settings."""
    s = p.spdy.search
    return sensitivity_search(
        disc.times,
        disc.budget,
        score,
        k=s.candidates,
        delta=s.delta,
        max_no_improvement=s.max_no_improvement,
        local_rule=s.local_rule,
        seed=s.seed,
        resume_state=resume,
        checkpoint=checkpoint,
        progress=progress,
    )


def _checkpoint_path(p: Params, item: Item) -> Path:
    return state_dir() / "spdy-search" / f"{SPDY_SEARCH.fingerprint(p, item)}.json"


def _search_compute(p: Params, item: Item) -> dict[str, Any]:
    configure(p.runtime.threads, p.runtime.flush_denormal)
    target = _target(p, item)
    problem = Problem(p)
    disc = problem.discretize(p, target)
    score = problem.calibration_loss(p)
    ckpt = _checkpoint_path(p, item)
    resume = None
    if ckpt.exists():
        try:
            resume = state_from_json(ckpt.read_text())
        except PruneflowError:
            resume = None  # a damaged checkpoint only costs the work it held

    def save(state: Any) -> None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(state_to_json(state))
        tmp.replace(ckpt)

    result = run_search(p, disc, score, resume, save, progress=progress_enabled(p.runtime.progress))
    levels = np.asarray(result.best_profile)
    rows = np.arange(len(levels))
    errors = errors_from_c(result.best_c, len(problem.grid))
    profile = pd.DataFrame(
        {
            "layer": problem.layers,
            "level": levels.astype(np.int64),
            "sparsity": [problem.grid[i] for i in levels],
            "time_ms": problem.times_ms[rows, levels],
            "error_score": errors[rows, levels],
        }
    )
    speedup = disc.predicted_speedup(levels)
    meta = {
        "model": p.model.name,
        "target": target,
        "predicted_speedup": speedup,
        "calib_loss": result.best_loss,
        "best_c": result.best_c.tolist(),
        "dp_calls": result.dp_calls,
        "profiles_scored": result.distinct_profiles,
        "bucket_ms": disc.bucket_ms,
        "max_overrun_ms": disc.max_overrun_ms,
    }
    history = result.history_frame()
    history["pred_time_ms"] = history.pop("pred_time") * disc.bucket_ms
    write_parquet(search_file(p, target), history[list(SEARCH_COLUMNS)], meta)
    write_parquet(profile_file(p, target), profile, meta)
    ckpt.unlink(missing_ok=True)
    return {k: v for k, v in meta.items() if k != "best_c"} | {
        "stitched_layer_copies": score.swapped_layers
    }


SPDY_SEARCH = Step(
    name="spdy_search",
    reads=READS,
    inputs=lambda p, item: _inputs(p),
    outputs=lambda p, item: [profile_file(p, _target(p, item)), search_file(p, _target(p, item))],
    compute=_search_compute,
    description="SPDY's sensitivity search for one speedup target -> profile.parquet",
    fan_out=True,
    items=target_items,
)


def read_profile(p: Params, target: float) -> pd.DataFrame:
    return read_parquet(profile_file(p, target), PROFILE_COLUMNS)


def _profile_rules(
    p: Params, problem: Problem, target: float, searched: pd.DataFrame
) -> dict[str, Callable[[Discretized], np.ndarray]]:
    """Each one-shot profile's rule: its levels for a discretized budget. SPDY's is the DP with
    the sensitivities its search found for ``target``: at ``target`` itself, the search's
    profile (``searched``)."""
    meta = parquet_metadata(profile_file(p, target))
    errors = errors_from_c(np.asarray(meta["best_c"], dtype=np.float64), len(problem.grid))
    dense_weights = [problem.db.weights(layer, 0).numpy() for layer in problem.layers]

    def spdy(d: Discretized) -> np.ndarray:
        if d.target_speedup == target:
            return searched["level"].to_numpy()
        return DPSolver(d.times, d.budget).solve(errors).levels

    return {
        "spdy": spdy,
        "uniform": lambda d: uniform_profile(d.times, d.budget),
        "gmp": lambda d: global_magnitude_profile(dense_weights, problem.grid, d.times, d.budget),
        "prior": lambda d: prior_profile(DPSolver(d.times, d.budget)),
    }


class _Measure:
    """Profiles' measured end-to-end speedups: the database's weights stitched into copies of
    the dense model, run on the timing table's backends against the dense model, all of them
    in the same passes (``spdy_results``' measurement)."""

    def __init__(self, p: Params, problem: Problem):
        self.p, self.problem = p, problem
        self.model = dense_model(p)
        self.x = timing_batch(p, problem.meta)
        self.dense = SparseRuntime(copy.deepcopy(self.model), "dense", example=self.x)

    def __call__(self, profiles: list[Sequence[int]]) -> list[float]:
        pruned = []
        for levels in profiles:
            model = self.problem.db.stitch(
                copy.deepcopy(self.model), dict(zip(self.problem.layers, levels, strict=True))
            )
            pruned.append(SparseRuntime.from_table(model.eval(), self.problem.table))
        return measured_speedups(self.p, self.problem.meta, self.dense, pruned, self.x)


def _verified(
    p: Params,
    problem: Problem,
    target: float,
    rules: dict[str, Callable[[Discretized], np.ndarray]],
    measure: _Measure | None,
) -> dict[str, tuple[Attempt, list[Attempt]]]:
    """Each rule's profile for ``target``, re-aimed until its measured speedup is on target
    (``spdy.verify``): per rule, the attempt kept and every attempt (none, and the speedup not
    measured, with ``spdy.verify.rounds`` 0)."""
    disc = problem.discretize(p, target)
    first = {name: rule(disc) for name, rule in rules.items()}
    if measure is None:
        return {
            name: (Attempt(target, tuple(int(v) for v in lv), disc.predicted_speedup(lv), nan), [])
            for name, lv in first.items()
        }

    def solver(rule: Callable[[Discretized], np.ndarray]) -> Callable[[float], Any]:
        def solve(aim: float) -> np.ndarray | None:
            try:
                return rule(problem.discretize(p, aim))
            except PruneflowError:  # the table cannot reach this aim
                return None

        return solve

    v = p.spdy.verify
    return meet_measured_targets(
        target,
        {name: (solver(rule), first[name]) for name, rule in rules.items()},
        disc.predicted_speedup,
        measure,
        rounds=v.rounds,
        tolerance=v.tolerance,
    )


def _oneshot_compute(p: Params) -> dict[str, Any]:
    configure(p.runtime.threads, p.runtime.flush_denormal)
    verifying = p.spdy.verify.rounds > 0
    problem = Problem(p, measuring=verifying)
    measure = _Measure(p, problem) if verifying else None
    s = p.spdy.search
    score = problem.calibration_loss(p)
    rows, chosen, attempts = [], [], []
    for done, target in enumerate(p.spdy.targets, 1):
        disc = problem.discretize(p, target)
        spdy = read_profile(p, target)
        if list(spdy["layer"]) != problem.layers:
            raise PruneflowError(f"{profile_file(p, target)} is for layers {list(spdy['layer'])}")
        search_meta = parquet_metadata(profile_file(p, target))
        verified = _verified(p, problem, target, _profile_rules(p, problem, target, spdy), measure)
        report_progress(f"{p.model.name}: one-shot targets", done, len(p.spdy.targets))
        for name, (kept, tried) in verified.items():
            levels = np.asarray(kept.levels)
            attempts += [
                {"target": float(target), "profile": name, **vars(a), "levels": list(a.levels)}
                for a in tried
            ]
            loss = score([int(v) for v in levels])
            acc = test_accuracy(p, score.model)
            is_spdy = name == "spdy"
            rows.append(
                {
                    "model": p.model.name,
                    "target": float(target),
                    "profile": name,
                    "calib_loss": loss,
                    "test_acc": acc,
                    "predicted_speedup": disc.predicted_speedup(levels),
                    "aim": kept.aim,
                    "measured_speedup": kept.measured,
                    "dp_calls": int(search_meta["dp_calls"]) if is_spdy else int(name == "prior"),
                    "profiles_scored": int(search_meta["profiles_scored"]) if is_spdy else 1,
                    "seed": s.seed,
                }
            )
            chosen += [
                {
                    "target": float(target),
                    "profile": name,
                    "layer": layer,
                    "level": int(lv),
                    "sparsity": problem.grid[int(lv)],
                }
                for layer, lv in zip(problem.layers, levels, strict=True)
            ]
    oneshot = pd.DataFrame(rows, columns=list(ONESHOT_COLUMNS))
    meta = {"model": p.model.name, "grid": problem.grid, "bn": s.bn, "verify": attempts}
    write_parquet(oneshot_file(p), oneshot, meta)
    write_parquet(profiles_file(p), pd.DataFrame(chosen, columns=list(PROFILES_COLUMNS)), meta)
    figures = figure_files(p)
    plot_search(
        {t: pd.read_parquet(search_file(p, t)) for t in p.spdy.targets},
        p.model.name,
        figures["search"],
    )
    plot_profiles(pd.DataFrame(chosen), problem.layers, p.model.name, figures["profiles"])
    wins = oneshot.pivot(index="target", columns="profile", values="calib_loss")
    return {
        "table": oneshot.round(4).to_dict(orient="records"),
        # ties count: a baseline often lands on the very profile SPDY chose
        "spdy_lowest_loss_at": [
            float(t) for t in wins.index if wins.loc[t, "spdy"] <= wins.loc[t].min()
        ],
        "re_aimed": sorted(
            {(r["target"], r["profile"]) for r in attempts if r["aim"] > r["target"]}
        ),
    }


SPDY_ONESHOT = Step(
    name="spdy_oneshot",
    reads=READS + ("spdy.targets", "spdy.verify", *MEASURE_KEYS),
    inputs=lambda p: (
        _inputs(p) + [f for t in p.spdy.targets for f in (profile_file(p, t), search_file(p, t))]
    ),
    outputs=lambda p: [oneshot_file(p), profiles_file(p), *figure_files(p).values()],
    compute=_oneshot_compute,
    description="SPDY vs uniform, global magnitude and prior profiles, one-shot -> oneshot.parquet",
)
