"""Layer-time profiler: every prunable layer at every grid level, on the local CPU's backends.

Timings are taken in situ (:mod:`pruneflow.timing.insitu`): each profiled (not skipped) layer
runs inside whole-model forward passes of one calibration batch at the configured batch size,
so it sees its real input (shape and memory layout) and its real cache state.

1. A dense sweep: the BN-folded dense model; per-layer dense times and the end-to-end time
   from runs without the timing slots, interleaved with the timed ones.
2. ``rounds`` rounds of sweeps. In each round every profiled layer visits every level (dense
   included) once, each layer in its own seeded random order, so that in one sweep its
   neighbours sit at other, independent levels, as in a pruned model. A layer at a sparse level
   gets a random mask of exactly that sparsity (seeded per layer, level and round) on its
   BN-folded weight, and each available sparse backend runs the whole model (a layer it cannot
   run, or that is hopeless after one run, keeps its best backend so far); a layer at level 0
   runs dense. An all-dense sweep follows every eighth sweep (every round's start when a round
   has fewer levels), and one more ends the run: they give the dense reference.
   Rounds are added until the sweeps have taken ``min_seconds`` (at most ``max_rounds``).
3. Per (layer, level, backend): the ``quantile`` of its runs pooled over the rounds. Per
   (layer, level) the fastest backend is kept, or dense when no sparse backend beats it.
4. Context: what each (layer, level) does to the time outside the profiled layers and to the
   next layer is added to its entry (:mod:`pruneflow.timing.context`); the remainder is the
   time outside the profiled layers over all sweeps, and the dense entries absorb what makes
   the dense model add up as measured (the identity below).
5. Each layer's sparse-level times are replaced by a local linear fit over ``smooth_window``
   neighbouring levels (within a factor 1.3 in density), made non-increasing in sparsity
   (:mod:`pruneflow.timing.smooth`); the unsmoothed entries stay in the metadata
   (``measured_time_ms``).

Why. A shared CPU's speed drifts by 10-20% within seconds to minutes, memory-bound sparse
kernels more than dense GEMM, and every layer timed in one sweep shares that moment. SPDY's DP
and search seek the cheapest levels, so a level swept in a quiet moment would be picked for
its luck and the chosen profile would run slower than predicted. Rounds in random level orders
spread every entry over many moments; a low quantile of the pooled runs is the speed the host
gives undisturbed, which the runs of every moment bound from below (the median moves with the
other tenants' load); a minimum duration covers the slow drift over minutes; smoothing removes
the winner's curse that is left. The runs are used as measured, with no correction by a probe
workload: a probe's time depends on the level swept just before it, not on the host. The
measurements behind each choice are in docs/timing.md.

Remainder. Everything outside the profiled layers (skipped first/last layers, poolings not
fused into a convolution, residual adds, flatten, dispatch) is timed in every sweep too. It
runs slower after layers that stream a lot of memory through the caches (dense ones, CSR ones
at 40-60% sparsity), as does a sparse layer after such a neighbour; one sweep per level with
every layer at that level could not tell which layer caused it, nor see a sparse layer beside a
dense one. With independent levels per layer, the mean of (outside time + next layer's
residual) over the sweeps with a layer at a level, minus its mean over all sweeps, is that
level's effect, charged to its entry.
``remainder_ms = dense_total_ms - sum of the profiled layers' dense (level 0) entries`` holds
exactly.

Threads are fixed for the whole run (torch and numba alike).

A model the runtime cannot take apart (:class:`~pruneflow.timing.runtime.SparseRuntime`'s
``whole``) is timed whole instead: :mod:`pruneflow.timing.whole`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.models.zoo import SMALLCNN_WIDTHS, prunable_layers
from pruneflow.sparsity.grid import skipped_layers, sparsity_grid
from pruneflow.timing import backends as B
from pruneflow.timing.context import SweepRecord, context_effects
from pruneflow.timing.insitu import InSitu, SweepResult, SweepSettings
from pruneflow.timing.measure import Timing, measure, thread_scope
from pruneflow.timing.runtime import SparseRuntime, prepare_inference_model
from pruneflow.timing.smooth import smooth_level_times
from pruneflow.timing.table import FORMAT, host_description
from pruneflow.timing.whole import whole_model_table

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "ProfileSettings",
    "default_batch_size",
    "exact_mask",
    "profile_model",
    "progress_calls",
]

# Batches at which every profiled layer takes well over 0.5 ms dense on one Zen 4 thread with
# 28x28 inputs (in situ): mlp1024 at 64: fc1 1.4, fc2/fc3 1.75 ms (32 would give ~0.9 ms;
# 64 is also the batch of the DeepSparse reference figures). smallcnn at 16: conv2-5 4-8 ms,
# fc1 2.9 ms (fc1 streams its 12.8 MB of weights at any batch; 4 and 8 would also pass the
# 0.5 ms bar, but a batch that is a multiple of 16 keeps the kernel's vector loads aligned in
# the small-map layout). The skipped conv1 (0.3-0.5 ms) and fc2 (0.13 ms) cannot reach it.
# A narrower smallcnn's convolutions cost width^2 per image: the batch grows as 1/width^2 (a
# multiple of 16) so every conv does the work smallcnn's do at 16 (smallcnn_w16: 64, where its
# conv2-5 take 2.3-4.6 ms and fc1 2.7 ms dense).
DEFAULT_BATCH_SIZES: dict[str, int] = {
    "mlp1024": 64,
    "smallcnn": 16,
    **{f"smallcnn_w{w}": 16 * -(-(32 * 32) // (w * w)) for w in SMALLCNN_WIDTHS},
}
FALLBACK_BATCH_SIZE = 32

# A dense sweep after every this many sparse sweeps (and at the start and the end): every
# predicted speedup is the dense total over a sum of table entries, so the dense reference
# must not rest on the few moments at round starts (with two rounds, two of the three dense
# sweeps once came out 7% slow, and every prediction 7% optimistic)
_DENSE_EVERY = 8
# A candidate backend slower than this multiple of the layer's best time after one run is
# dropped for that layer and level (its median would not win).
_GIVE_UP = 1.5

ProgressFn = Callable[[str, int, str, float], None]


def default_batch_size(model_name: str) -> int:
    """The profiling batch size for ``model_name`` (a per-model default, else 32)."""
    return DEFAULT_BATCH_SIZES.get(model_name, FALLBACK_BATCH_SIZE)


@dataclass(frozen=True)
class ProfileSettings:
    """How to profile. ``None`` batch size / levels / backends mean the defaults.

    ``warmup``, ``min_repeats``, ``max_repeats``, ``rel_tol`` and ``max_seconds`` apply to
    each whole-model sweep (one per round, sweep and backend); the dense reference sweeps get
    twice the repeats and time and half the tolerance. ``rounds``: how many times every
    (layer, level) is timed, each time in another sweep beside other neighbours' levels.
    ``quantile``: each entry is this quantile of its runs, pooled over the rounds (the
    median by default; see the module docstring for the low quantile pipelines use).
    ``min_seconds``: after ``rounds`` rounds, whole rounds are added (up to ``max_rounds``)
    until the sweeps have taken this long, so a fast model's entries too span minutes of the
    host's drift, not seconds (see the module docstring).
    ``smooth_window``: levels per local linear fit of each layer's times over density, made
    non-increasing in sparsity (:mod:`pruneflow.timing.smooth`); 1 keeps the medians as
    measured.
    """

    batch_size: int | None = None
    threads: int = 1
    levels: Sequence[float] | None = None
    backends: Sequence[str] | None = None
    skip_first_last: bool = True
    include: tuple[str, ...] = ()  # glob patterns (see pruneflow.sparsity.grid.skipped_layers)
    exclude: tuple[str, ...] = ()
    warmup: int = 1
    min_repeats: int = 3
    max_repeats: int = 15
    rel_tol: float = 0.03
    max_seconds: float = 0.25
    rounds: int = 2
    quantile: float = 0.5
    min_seconds: float = 0.0
    max_rounds: int = 10
    smooth_window: int = 5
    seed: int = 0


def progress_calls(n_layers: int, n_levels: int, rounds: int) -> int:
    """How often :func:`profile_model` calls ``progress``: once per layer and sweep (with
    ``rounds`` the rounds actually run: more than asked for under ``min_seconds``)."""
    return n_layers * (1 + rounds * n_levels)


def _check_levels(levels: Sequence[float]) -> list[float]:
    lv = [float(v) for v in levels]
    if not lv or lv[0] != 0.0:
        raise PruneflowError(f"levels must start with the dense level 0.0, got {lv[:3]}...")
    for v in lv:
        if not 0.0 <= v < 1.0:
            raise PruneflowError(f"sparsity level {v} out of range [0, 1)")
    if any(b <= a for a, b in zip(lv, lv[1:], strict=False)):
        raise PruneflowError("sparsity levels must be strictly increasing")
    return lv


def exact_mask(shape: torch.Size, sparsity: float, rng: np.random.Generator) -> torch.Tensor:
    """A float mask with exactly ``round(sparsity * numel)`` zeros at random positions."""
    numel = int(np.prod(shape))
    zeros = int(round(sparsity * numel))
    flat = np.ones(numel, dtype=np.float32)
    flat[rng.choice(numel, size=zeros, replace=False)] = 0.0
    return torch.from_numpy(flat).reshape(shape)


def _masked(layer: nn.Module, sparsity: float, rng: np.random.Generator) -> nn.Module:
    out = copy.deepcopy(layer)
    with torch.no_grad():
        out.weight.mul_(exact_mask(out.weight.shape, sparsity, rng))
    return out


def _calibration_batch(
    calib: torch.Tensor | None, in_shape: Sequence[int] | None, batch: int, seed: int
) -> torch.Tensor:
    if calib is not None:
        if calib.shape[0] < batch:
            raise PruneflowError(
                f"calibration batch has {calib.shape[0]} samples, the profile needs {batch}"
            )
        return calib[:batch].detach().to(torch.float32).contiguous()
    if in_shape is None:
        raise PruneflowError("profile_model needs either a calibration batch or in_shape")
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *[int(v) for v in in_shape], generator=gen)


def _sweep_plan(
    profiled: Sequence[str], n_levels: int, rounds: int, seed: int
) -> list[tuple[int, dict[str, int]]]:
    """``(round, layer -> level)`` of every sweep: per round ``n_levels`` sweeps in which every
    layer visits every level ``0 .. n_levels - 1`` once, each layer in its own random order, so
    that its neighbours sit at independent levels (:mod:`pruneflow.timing.context`)."""
    rng = np.random.default_rng([seed, 0x5EED])
    plan = []
    for r in range(rounds):
        orders = {n: rng.permutation(np.arange(n_levels)) for n in profiled}
        plan += [(r, {n: int(orders[n][k]) for n in profiled}) for k in range(n_levels)]
    return plan


@dataclass
class _Context:
    """What every sparse sweep of one profile shares."""

    session: InSitu
    folded: nn.Module
    relu: dict[str, bool]
    pool: dict[str, bool]
    dense_exec: dict[str, nn.Module]
    dense: SweepResult  # the give-up reference
    names: Sequence[str]
    levels: Sequence[float]
    sparse_backends: Sequence[str]
    seed: int
    settings: SweepSettings


def _sparse_sweep(
    ctx: _Context, rnd: int, assign: Mapping[str, int]
) -> tuple[dict[str, dict[str, Timing]], Timing]:
    """Every backend's timing per layer at its assigned level (``dense`` for a layer at level
    0, every backend's whole-model sweep's runs pooled; a sparse backend a layer gave up on, or
    cannot run: absent) and the time outside the profiled layers (every run pooled)."""
    sparse = [n for n, li in assign.items() if li > 0]
    masked = {
        n: _masked(
            ctx.folded.get_submodule(n),
            ctx.levels[assign[n]],
            np.random.default_rng([ctx.seed, ctx.names.index(n), assign[n], rnd]),
        )
        for n in sparse
    }
    found: dict[str, dict[str, Timing]] = {n: {} for n in assign}
    dense_runs: dict[str, list[Timing]] = {n: [] for n in assign if n not in masked}
    outside: list[Timing] = []
    best: dict[str, Timing] = {}
    current: dict[str, nn.Module] = dict(ctx.dense_exec)

    def record(result: SweepResult) -> None:
        outside.append(result.remainder)
        for n, runs in dense_runs.items():
            t = result.layers[n]
            if t is not None:
                runs.append(t)

    for bname in ctx.sparse_backends:
        backend = B.get_backend(bname)
        exes = {}
        for n in sparse:
            if backend.supports(masked[n]):
                exe = B.build_layer(
                    bname, masked[n], relu=ctx.relu.get(n, False), pool=ctx.pool.get(n, False)
                )
                exe.feature_major = getattr(ctx.dense_exec[n], "feature_major", False)
                exe.next_layer = getattr(ctx.dense_exec[n], "next_layer", None)
                exes[n] = exe
        if not exes:
            continue
        give_up = {}
        for n, exe in exes.items():
            ref = best[n] if n in best else ctx.dense.layers[n]
            assert ref is not None
            give_up[n] = (_GIVE_UP * ref.median_ms, current[n])
            ctx.session.install(n, exe)
        result = ctx.session.sweep(ctx.settings, give_up)
        record(result)
        for n, exe in exes.items():
            t = result.layers[n]
            if t is not None:
                found[n][bname] = t
                if n not in best or t.median_ms < best[n].median_ms:
                    best[n], current[n] = t, exe
            ctx.session.install(n, current[n])
    if not outside:  # no sparse layer ran on any backend: the model as it is, once
        record(ctx.session.sweep(ctx.settings))
    for n in sparse:
        ctx.session.install(n, ctx.dense_exec[n])
    for n, runs in dense_runs.items():
        if runs:
            found[n]["dense"] = Timing.pooled(runs)
    return found, Timing.pooled(outside)


def _over_rounds(timings: Sequence[Timing]) -> Timing:
    """One timing from a (layer, level, backend)'s rounds: all their runs pooled."""
    return Timing.pooled(timings)


def _fastest(
    rounds: Sequence[Mapping[str, Timing]], dense_t: Timing, quantile: float = 0.5
) -> tuple[str, Timing]:
    """The backend with the lowest ``quantile`` of its runs pooled over the rounds, or dense
    when none beats ``dense_t``. A backend given up on in half the rounds or more is out (one
    lucky round does not make it the choice)."""
    choice, best = "dense", dense_t
    for bname in dict.fromkeys(b for found in rounds for b in found):
        kept = [found[bname] for found in rounds if bname in found]
        if 2 * len(kept) <= len(rounds) and len(rounds) > 1:
            continue
        pooled = _over_rounds(kept)
        if pooled.quantile(quantile) < best.quantile(quantile):
            choice, best = bname, pooled
    return choice, best


def _dense_sweep_before(j: int, sparse_levels: int) -> bool:
    """Whether a dense sweep runs before sparse sweep ``j`` (0-based; the first dense sweep
    precedes them all): after every ``_DENSE_EVERY``-th, or every round's start when a round
    has fewer levels."""
    return j > 0 and j % min(_DENSE_EVERY, sparse_levels) == 0


def _enough(started: float, min_seconds: float) -> bool:
    return time.perf_counter() - started >= min_seconds


def _dense_reference(sweeps: Sequence[SweepResult]) -> tuple[Timing, dict[str, Timing]]:
    """The dense model's end-to-end timing (its slot-free runs) and each layer's, every dense
    sweep's runs pooled: dense sweeps are spread over the whole profile, so the reference
    every predicted speedup divides rests on all of its moments, not on one sweep's."""
    total = Timing.pooled([s.plain_total for s in sweeps if s.plain_total is not None])
    layers = {
        n: Timing.pooled([t for s in sweeps if (t := s.layers[n]) is not None])
        for n in sweeps[0].layers
    }
    return total, layers


def _records(
    sweeps: Sequence[tuple[Mapping[str, int], Mapping[str, Mapping[str, Timing]], Timing]],
    rows: Sequence[Mapping[str, Any]],
    q: float,
) -> list[SweepRecord]:
    """Each sweep's layer times on the backend its layer's table entry uses at that level."""
    chosen = {(r["layer"], r["level"]): r["backend"] for r in rows}
    out = []
    for assign, found, outside in sweeps:
        layer_ms: dict[str, float | None] = {}
        for n, li in assign.items():
            t = found[n].get(chosen[(n, li)])
            layer_ms[n] = None if t is None else t.quantile(q)
        out.append(SweepRecord(dict(assign), layer_ms, outside.quantile(q)))
    return out


def _add_context(
    rows: list[dict[str, Any]], effects: Mapping[str, np.ndarray], dense_excess: float
) -> None:
    """Add each (layer, level)'s context effect to its entry (in place, ``rows``), and spread
    ``dense_excess`` over the dense entries in proportion to their times, so that the dense
    model is predicted as measured: ``remainder_ms = dense_total_ms - sum of dense entries``.

    An entry never drops below a tenth of its own time (an effect is a few percent of a
    forward pass; a larger negative one is noise)."""
    dense_sum = sum(r["time_ms"] for r in rows if r["level"] == 0)
    for r in rows:
        add = float(effects[r["layer"]][r["level"]])
        if r["level"] == 0 and dense_sum > 0:
            add += dense_excess * r["time_ms"] / dense_sum
        for key in ("time_ms", "time_ms_p10", "time_ms_p90"):
            r[key] = max(r[key] + add, 0.1 * r[key])


def _smooth(rows: list[dict[str, Any]], levels: Sequence[float], window: int) -> None:
    """Every layer's sparse-level times smoothed over the levels (in place, ``rows``); the
    p10/p90 figures move with their median."""
    for name in dict.fromkeys(r["layer"] for r in rows):
        mine = (r for r in rows if r["layer"] == name and r["level"] > 0)
        sparse = sorted(mine, key=lambda r: int(r["level"]))
        if not sparse:
            continue
        fit = smooth_level_times(
            [levels[r["level"]] for r in sparse], [r["time_ms"] for r in sparse], window
        )
        for r, t in zip(sparse, fit, strict=True):
            f = t / r["time_ms"] if r["time_ms"] > 0 else 1.0
            r["time_ms"], r["time_ms_p10"], r["time_ms_p90"] = (
                float(t),
                r["time_ms_p10"] * f,
                r["time_ms_p90"] * f,
            )


def profile_model(
    model: nn.Module,
    model_name: str,
    *,
    in_shape: Sequence[int] | None = None,
    calib: torch.Tensor | None = None,
    settings: ProfileSettings | None = None,
    progress: ProgressFn | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Profile ``model`` (named ``model_name`` in the zoo/table) on this host.

    Input: ``calib`` (its first ``batch_size`` samples) or random normal data of
    ``in_shape``. Returns ``(table, metadata)`` for :func:`write_timing_table`.
    ``progress(layer, level, backend, time_ms)`` is called once per layer and sweep
    (:func:`progress_calls` times), with that sweep's raw in-situ time of its best backend.
    """
    st = settings or ProfileSettings()
    levels = _check_levels(st.levels if st.levels is not None else sparsity_grid())
    batch = st.batch_size if st.batch_size is not None else default_batch_size(model_name)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise PruneflowError(f"batch_size must be an integer >= 1, got {batch!r}")
    if isinstance(st.rounds, bool) or not isinstance(st.rounds, int) or st.rounds < 1:
        raise PruneflowError(f"rounds must be an integer >= 1, got {st.rounds!r}")
    if isinstance(st.max_rounds, bool) or not isinstance(st.max_rounds, int):
        raise PruneflowError(f"max_rounds must be an integer, got {st.max_rounds!r}")
    if st.max_rounds < st.rounds:
        raise PruneflowError(f"max_rounds ({st.max_rounds}) must be >= rounds ({st.rounds})")
    if not 0.0 < st.quantile < 1.0:
        raise PruneflowError(f"quantile must be in (0, 1), got {st.quantile!r}")
    if not st.min_seconds >= 0.0:
        raise PruneflowError(f"min_seconds must be >= 0, got {st.min_seconds!r}")
    w = st.smooth_window
    if isinstance(w, bool) or not isinstance(w, int) or w < 1:
        raise PruneflowError(f"smooth_window must be an integer >= 1, got {w!r}")
    candidates = list(st.backends) if st.backends is not None else B.available_backends("cpu")
    for name in candidates:
        B.get_backend(name)  # unknown or unavailable: a clear error now, not mid-run
    sparse_backends = [b for b in candidates if b != "dense"]
    names = prunable_layers(model)
    skipped = skipped_layers(model_name, names, st.skip_first_last, st.include, st.exclude)
    profiled = [n for n in names if n not in skipped]
    if not profiled:
        raise PruneflowError(
            f"model '{model_name}' has no prunable layers left to profile "
            f"(all of {names} are skipped)"
        )
    x = _calibration_batch(calib, in_shape, batch, st.seed)
    started = time.perf_counter()
    sweep = SweepSettings(
        warmup=st.warmup,
        min_repeats=st.min_repeats,
        max_repeats=st.max_repeats,
        rel_tol=st.rel_tol,
        max_seconds=st.max_seconds,
    )
    dense_sweep = SweepSettings(
        warmup=max(st.warmup, 2),
        min_repeats=2 * st.min_repeats,
        max_repeats=2 * st.max_repeats,
        rel_tol=st.rel_tol / 2,
        max_seconds=2 * st.max_seconds,
    )
    found: dict[str, dict[int, list[dict[str, Timing]]]] = {n: {} for n in profiled}
    swept: list[tuple[dict[str, int], dict[str, dict[str, Timing]], Timing]] = []
    with thread_scope(st.threads), torch.no_grad():
        original = copy.deepcopy(model).eval()
        rt = SparseRuntime(model, "dense", example=x)
        if rt.whole is not None:  # it cannot be taken apart: timed whole, 1x at every level
            return whole_model_table(
                rt,
                model_name,
                names,
                profiled,
                skipped,
                levels,
                x,
                threads=st.threads,
                quantile=st.quantile,
                repeats=(2 * st.min_repeats, 2 * st.max_repeats),
                max_seconds=2 * st.max_seconds,
                seed=st.seed,
            )
        missing = [n for n in profiled if n not in rt.backends]
        if missing:
            raise PruneflowError(f"layers never called in forward: {', '.join(missing)}")
        folded, relu, pool, _ = prepare_inference_model(model)
        session = InSitu(rt, profiled, x)
        dense_exec = {n: session.installed(n) for n in profiled}
        dense_sweeps = [session.sweep(dense_sweep, plain=True)]
        first = dense_sweeps[0]
        ctx = _Context(
            session,
            folded,
            relu,
            pool,
            dense_exec,
            first,
            names,
            levels,
            sparse_backends,
            st.seed,
            sweep,
        )

        def report(level_of: Mapping[str, int], best: Mapping[str, Mapping[str, Timing]]) -> None:
            for n, li in level_of.items():
                dense_t = first.layers[n]
                assert dense_t is not None
                backend, t = min(
                    best.get(n, {}).items(),
                    key=lambda kv: kv[1].median_ms,
                    default=("dense", dense_t),
                )
                if progress is not None:
                    progress(n, li, backend, min(t.median_ms, dense_t.median_ms))

        report({n: 0 for n in profiled}, {})
        plan = _sweep_plan(profiled, len(levels), st.max_rounds, st.seed)
        rounds_run = 0
        for j, (rnd, assign) in enumerate(plan):
            if rnd == rounds_run:  # a round starts
                if rnd >= st.rounds and _enough(started, st.min_seconds):
                    break
                rounds_run += 1
            if _dense_sweep_before(j, len(levels)):
                dense_sweeps.append(session.sweep(dense_sweep, plain=True))
            best, out = _sparse_sweep(ctx, rnd, assign)
            for n, li in assign.items():
                found[n].setdefault(li, []).append(best[n])
            swept.append((assign, best, out))
            report(assign, best)
        dense_sweeps.append(session.sweep(dense_sweep, plain=True))
        total, dense_times = _dense_reference(dense_sweeps)
        session.remove()
        torch_total = measure(
            lambda: original(x),
            warmup=2,
            min_repeats=2 * st.min_repeats,
            max_repeats=2 * st.max_repeats,
            max_seconds=2 * st.max_seconds,
        )
    q = st.quantile
    rows: list[dict[str, Any]] = []
    for name in profiled:
        layer = folded.get_submodule(name)
        op = "conv2d" if isinstance(layer, nn.Conv2d) else "linear"
        # dense among neighbours at random levels (as in a pruned model), not among dense ones
        mixed = [f["dense"] for f in found[name].get(0, []) if "dense" in f]
        dense_t = _over_rounds(mixed) if mixed else dense_times[name]
        for li, s in enumerate(levels):
            backend, t = ("dense", dense_t) if li == 0 else _fastest(found[name][li], dense_t, q)
            rows.append(
                {
                    "layer": name,
                    "layer_index": names.index(name),
                    "op": op,
                    "level": li,
                    "sparsity": s,
                    "backend": backend,
                    "device": "cpu",
                    "threads": st.threads,
                    "batch_size": batch,
                    "time_ms": t.quantile(q),
                    "time_ms_p10": t.p10_ms,
                    "time_ms_p90": t.p90_ms,
                    "repeats": t.repeats,
                }
            )
    # the remainder: the time outside the profiled layers, every sweep's runs pooled; what a
    # layer's level adds to it and to the next layer: its context effect (pruneflow.timing.context)
    outside_ms = _over_rounds([out for _, _, out in swept]).quantile(q)
    entries = {n: [r["time_ms"] for r in rows if r["layer"] == n] for n in profiled}
    effects = context_effects(_records(swept, rows, q), entries, profiled)
    dense_model = outside_ms + sum(entries[n][0] + effects[n][0] for n in profiled)
    _add_context(rows, effects, total.quantile(q) - dense_model)
    measured = {n: [r["time_ms"] for r in rows if r["layer"] == n] for n in profiled}
    _smooth(rows, levels, st.smooth_window)
    table = pd.DataFrame(rows)
    for col in ("layer_index", "level", "threads", "batch_size", "repeats"):
        table[col] = table[col].astype("int64")
    prunable_dense = float(table.loc[table["level"] == 0, "time_ms"].sum())
    meta = {
        "format": FORMAT,
        "model": model_name,
        "layers": profiled,
        "all_layers": names,
        "skipped_layers": skipped,
        "levels": levels,
        "batch_size": batch,
        "in_shape": list(x.shape[1:]),
        "threads": st.threads,
        "device": "cpu",
        "host": host_description(st.threads),
        "backends": candidates,
        "rounds": rounds_run,
        "smooth_window": st.smooth_window,
        "measured_time_ms": measured,
        "quantile": q,
        "dense_total_ms": total.quantile(q),
        "dense_total_p10_ms": total.p10_ms,
        "dense_total_p90_ms": total.p90_ms,
        "dense_sweep_totals_ms": [r.total.median_ms for r in dense_sweeps],
        "torch_dense_total_ms": torch_total.median_ms,
        "prunable_dense_ms": prunable_dense,
        "remainder_ms": total.quantile(q) - prunable_dense,
        "outside_ms": outside_ms,
        "context_ms": {n: [float(v) for v in effects[n]] for n in profiled},
        "bn_folded": rt.traced,
        "fused_relu": rt.fused_relu,
        "fused_pool": rt.fused_pool,
        "seed": st.seed,
        "profile_seconds": time.perf_counter() - started,
    }
    return table, meta
