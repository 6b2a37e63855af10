"""Layer-time profiler: every prunable layer at every grid level, on this host's backends.

Timings are taken in situ (:mod:`pruneflow.timing.insitu`): each profiled (not skipped) layer
runs inside whole-model forward passes of one calibration batch at the configured batch size,
so it sees its real input (shape and memory layout) and its real cache state.

1. Dense sweep: the BN-folded dense model; per-layer dense times, and the end-to-end time from
   runs without the timing slots, interleaved with the timed ones.
2. Every sparser level: every profiled layer gets a random mask of exactly that sparsity
   (seeded per layer and level) on its BN-folded weight; each available sparse backend runs
   the whole model at that level (a layer it cannot run, or that is hopeless after one run,
   keeps its best backend so far); per layer the fastest backend is kept, or dense when no
   sparse backend beats it.
3. A second dense sweep at the end: of the two, the quieter one (lower end-to-end median) is
   the dense reference, so a load spike on the host during one of them does not make every
   sparse level look better than dense.

Remainder. Everything outside the profiled layers (skipped first/last layers, pooling,
residual adds, flatten, dispatch) is timed in every sweep too. It is not a constant: it runs
slower after layers that pollute the caches (see :func:`_outside_shares`). The recorded
``remainder_ms`` is its value at the sparsest levels, and each level's excess is charged to
that level's layers, so that ``remainder_ms = dense_total_ms - sum of the profiled layers'
dense (level 0) times`` holds exactly and sparse profiles are predicted without the dense
model's cache pollution. Threads are fixed for the whole run (torch and numba alike).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.models.zoo import prunable_layers
from pruneflow.sparsity.grid import skipped_layers, sparsity_grid
from pruneflow.timing import backends as B
from pruneflow.timing.insitu import InSitu, SweepResult, SweepSettings
from pruneflow.timing.measure import Timing, measure, thread_scope
from pruneflow.timing.runtime import SparseRuntime, prepare_inference_model
from pruneflow.timing.table import FORMAT, host_description

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "ProfileSettings",
    "default_batch_size",
    "exact_mask",
    "profile_model",
]

# Batches at which every profiled layer takes well over 0.5 ms dense on one Zen 4 thread with
# 28x28 inputs (in situ): mlp1024 at 64: fc1 1.4, fc2/fc3 1.75 ms (32 would give ~0.9 ms;
# 64 is also the batch of the DeepSparse reference figures). smallcnn at 16: conv2-5 4-8 ms,
# fc1 2.9 ms (fc1 streams its 12.8 MB of weights at any batch; 4 and 8 would also pass the
# 0.5 ms bar, but a batch that is a multiple of 16 keeps the kernel's vector loads aligned in
# the small-map layout). The skipped conv1 (0.3-0.5 ms) and fc2 (0.13 ms) cannot reach it.
DEFAULT_BATCH_SIZES: dict[str, int] = {"mlp1024": 64, "smallcnn": 16}
FALLBACK_BATCH_SIZE = 32

# A candidate backend slower than this multiple of the layer's best time after one run is
# dropped for that layer and level (its median would not win).
_GIVE_UP = 1.5
# A level whose time exceeds this multiple of the next denser level's is swept again.
_RETRY = 1.1

ProgressFn = Callable[[str, int, str, float], None]


def default_batch_size(model_name: str) -> int:
    """The profiling batch size for ``model_name`` (a per-model default, else 32)."""
    return DEFAULT_BATCH_SIZES.get(model_name, FALLBACK_BATCH_SIZE)


@dataclass(frozen=True)
class ProfileSettings:
    """How to profile. ``None`` batch size / levels / backends mean the defaults.

    ``warmup``, ``min_repeats``, ``max_repeats``, ``rel_tol`` and ``max_seconds`` apply to
    each whole-model sweep (one per level and backend); the two dense reference sweeps get
    twice the repeats and time and half the tolerance.
    """

    batch_size: int | None = None
    threads: int = 1
    levels: Sequence[float] | None = None
    backends: Sequence[str] | None = None
    skip_first_last: bool = True
    warmup: int = 1
    min_repeats: int = 5
    max_repeats: int = 30
    rel_tol: float = 0.03
    max_seconds: float = 0.5
    seed: int = 0


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


def _sweep_level(
    session: InSitu,
    folded: nn.Module,
    relu: dict[str, bool],
    dense_exec: dict[str, nn.Module],
    dense: SweepResult,
    profiled: Sequence[str],
    names: Sequence[str],
    levels: Sequence[float],
    li: int,
    sparse_backends: Sequence[str],
    seed: int,
    st: SweepSettings,
) -> tuple[dict[str, tuple[str, Timing]], float | None]:
    """Best sparse (backend, timing) per layer at level ``li`` (layers no backend runs: absent)
    and the least time spent outside the profiled layers in this level's sweeps."""
    masked = {
        n: _masked(
            folded.get_submodule(n), levels[li], np.random.default_rng([seed, names.index(n), li])
        )
        for n in profiled
    }
    best: dict[str, tuple[str, Timing]] = {}
    current: dict[str, nn.Module] = dict(dense_exec)
    outside: float | None = None
    for bname in sparse_backends:
        backend = B.get_backend(bname)
        exes = {}
        for n in profiled:
            if backend.supports(masked[n]):
                exe = backend.build(masked[n], relu=relu.get(n, False))
                exe.feature_major = getattr(dense_exec[n], "feature_major", False)
                exes[n] = exe
        if not exes:
            continue
        give_up = {}
        for n, exe in exes.items():
            ref = best[n][1] if n in best else dense.layers[n]
            assert ref is not None
            give_up[n] = (_GIVE_UP * ref.median_ms, current[n])
            session.install(n, exe)
        result = session.sweep(st, give_up)
        if outside is None or result.remainder.median_ms < outside:
            outside = result.remainder.median_ms
        for n, exe in exes.items():
            t = result.layers[n]
            if t is not None and (n not in best or t.median_ms < best[n][1].median_ms):
                best[n] = (bname, t)
                current[n] = exe
            session.install(n, current[n])
    return best, outside


def _least_outside(outside: Sequence[float | None]) -> float:
    """The remainder: the median outside time over the sparsest third of the levels.

    Those levels pollute the caches least and agree with each other; the minimum over all
    levels would pick the luckiest of ~40 noisy sweeps instead.
    """
    known = [o for o in outside if o is not None]
    tail = known[-max(1, len(known) // 3) :]
    return max(0.0, float(np.median(tail)))


def _outside_shares(
    rows: list[dict[str, Any]], outside: Sequence[float | None], base: float
) -> None:
    """Charge each level's extra outside time to that level's layers, in proportion to time.

    The ops outside the profiled layers (skipped layers, pooling, dispatch) run slower after
    layers that stream a lot of weights through the caches: in mlp1024 the skipped 1024 -> 10
    output layer takes 0.15 ms after dense layers and 0.05 ms after 90%-sparse ones. A fixed
    remainder measured on the dense model would then over-predict every sparse profile (by
    14% at 90% sparsity). So the remainder is the outside time of the sparse levels
    (:func:`_least_outside`), and the excess of each level's outside time over it is added to
    that level's layers' times (in place, ``rows``).
    """
    for li, out in enumerate(outside):
        if out is None:
            continue
        at_level = [r for r in rows if r["level"] == li]
        total = sum(r["time_ms"] for r in at_level)
        for r in at_level:
            # a level below the remainder (noise) gets a negative share, never below a tenth
            # of the layer's own time
            share = (out - base) * r["time_ms"] / total if total > 0 else 0.0
            for key in ("time_ms", "time_ms_p10", "time_ms_p90"):
                r[key] = max(r[key] + share, 0.1 * r[key])


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
    ``progress(layer, level, backend, time_ms)`` is called once per table row, level by level
    as the sweeps complete (with the raw in-situ time, before the outside shares).
    """
    st = settings or ProfileSettings()
    levels = _check_levels(st.levels if st.levels is not None else sparsity_grid())
    batch = st.batch_size if st.batch_size is not None else default_batch_size(model_name)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise PruneflowError(f"batch_size must be an integer >= 1, got {batch!r}")
    candidates = list(st.backends) if st.backends is not None else B.available_backends("cpu")
    for name in candidates:
        B.get_backend(name)  # unknown or unavailable: a clear error now, not mid-run
    sparse_backends = [b for b in candidates if b != "dense"]
    names = prunable_layers(model)
    skipped = skipped_layers(model_name, names, st.skip_first_last)
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
    with thread_scope(st.threads), torch.no_grad():
        original = copy.deepcopy(model).eval()
        rt = SparseRuntime(model, "dense")
        missing = [n for n in profiled if n not in rt.backends]
        if missing:
            raise PruneflowError(f"layers never called in forward: {', '.join(missing)}")
        folded, relu, _ = prepare_inference_model(model)
        session = InSitu(rt, profiled, x)
        dense_exec = {n: session.installed(n) for n in profiled}
        first = session.sweep(dense_sweep, plain=True)

        def report(li: int, best: dict[str, tuple[str, Timing]]) -> None:
            # as levels complete, with raw in-situ times (the table's get the outside shares)
            for n in profiled:
                dense_t = first.layers[n]
                assert dense_t is not None
                backend, t = best.get(n, ("dense", dense_t))
                if progress is not None:
                    progress(n, li, backend, min(t.median_ms, dense_t.median_ms))

        def sweep_level(li: int) -> tuple[dict[str, tuple[str, Timing]], float | None]:
            return _sweep_level(
                session,
                folded,
                relu,
                dense_exec,
                first,
                profiled,
                names,
                levels,
                li,
                sparse_backends,
                st.seed,
                sweep,
            )

        report(0, {})
        best_sparse: list[dict[str, tuple[str, Timing]]] = [{}]
        outside: list[float | None] = [None]
        for li in range(1, len(levels)):
            best, out = sweep_level(li)
            best_sparse.append(best)
            outside.append(out)
            report(li, best)
        # A sparser level slower than the denser one before it was most likely hit by load
        # on the host (cache and memory traffic of other processes): sweep it once more and
        # keep each layer's faster median.
        for li in range(2, len(levels)):
            if any(
                n in best_sparse[li]
                and n in best_sparse[li - 1]
                and best_sparse[li][n][1].median_ms > _RETRY * best_sparse[li - 1][n][1].median_ms
                for n in profiled
            ):
                again, out = sweep_level(li)
                for n, cand in again.items():
                    old = best_sparse[li].get(n)
                    if old is None or cand[1].median_ms < old[1].median_ms:
                        best_sparse[li][n] = cand
                if out is not None and (outside[li] is None or out < outside[li]):
                    outside[li] = out
        for n in profiled:
            session.install(n, dense_exec[n])
        last = session.sweep(dense_sweep, plain=True)
        dense = first if first.total.median_ms <= last.total.median_ms else last
        session.remove()
        torch_total = measure(
            lambda: original(x),
            warmup=2,
            min_repeats=2 * st.min_repeats,
            max_repeats=2 * st.max_repeats,
            max_seconds=2 * st.max_seconds,
        )
    total = dense.plain_total
    assert total is not None  # dense sweeps time plain runs too
    dense_times: dict[str, Timing] = {}
    for n in profiled:
        t = dense.layers[n]
        assert t is not None  # dense sweeps never give up on a layer
        dense_times[n] = t
    rows: list[dict[str, Any]] = []
    for name in profiled:
        layer = folded.get_submodule(name)
        op = "conv2d" if isinstance(layer, nn.Conv2d) else "linear"
        dense_t = dense_times[name]
        for li, s in enumerate(levels):
            backend, t = best_sparse[li].get(name, ("dense", dense_t))
            if t.median_ms >= dense_t.median_ms:
                backend, t = "dense", dense_t
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
                    "time_ms": t.median_ms,
                    "time_ms_p10": t.p10_ms,
                    "time_ms_p90": t.p90_ms,
                    "repeats": t.repeats,
                }
            )
    # level 0: the plain (slot-free) dense model itself
    outside[0] = total.median_ms - sum(t.median_ms for t in dense_times.values())
    # the dense level never gets a negative share: remainder = dense total - dense layers
    _outside_shares(rows, outside, min(_least_outside(outside), max(outside[0], 0.0)))
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
        "dense_total_ms": total.median_ms,
        "dense_total_p10_ms": total.p10_ms,
        "dense_total_p90_ms": total.p90_ms,
        "torch_dense_total_ms": torch_total.median_ms,
        "prunable_dense_ms": prunable_dense,
        "remainder_ms": total.median_ms - prunable_dense,
        "outside_by_level_ms": outside,
        "bn_folded": rt.traced,
        "fused_relu": rt.fused_relu,
        "seed": st.seed,
        "profile_seconds": time.perf_counter() - started,
    }
    return table, meta
