"""One layer, every level: ``solve_layer`` picks a solver, runs it and measures the result.

Solvers (recorded per entry in the database's ``solver`` column; level 0 is ``dense``):

- ``exact``: OBC's exact greedy OBS per row with a global sort over the layer (``obs.py``).
  Nested levels. Cost ``~ rows * d^3`` flops: a 1024 x 1024 layer (1.1e12) takes 1-2 minutes
  on two x86 cores, smallcnn's conv5 (256 x 1152) 15-30 s.
- ``sparsegpt``: fixed column order with lazy block updates, one solve per level, mask by
  OBS saliency (``sparsegpt.py``), then an exact least-squares refit of the rows left with
  few weights (``refit.py``). Not nested. ``rows * d^2`` per level plus ``d^3`` once (or
  ``rows * d * r`` and ``d * r^2`` for a rank-r Hessian): smallcnn's fc1 (256 x 12544, rank
  1024) in ~40-90 s where exact OBS would need ~5e14 flops.
- ``auto`` (default): ``exact`` when ``rows * d^3 <= exact_max_work`` (2^41 ~ 2.2e12, i.e.
  up to ~1024 x 1300), else ``sparsegpt``.

Every level has exactly ``ceil(s * numel)`` zeros whenever the dense weight has at most that
many exact zeros (zeros already there, and the weights of dead inputs, are removed first at no
cost; level 0 is the dense weight untouched). ``rel_error`` is measured on the calibration
inputs, undampened: ``||W X - W^s X||^2 / ||W X||^2 = tr(dW H dW^T) / tr(W H W^T)``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pruneflow.errors import PruneflowError
from pruneflow.recon._common import exact_fp32, make_progress
from pruneflow.recon.damping import Damped, dampen, inverse_from_cholesky
from pruneflow.recon.hessian import Hessian
from pruneflow.recon.obs import greedy_order, select_counts, snapshot_levels
from pruneflow.recon.refit import refit_sparse_rows
from pruneflow.recon.sparsegpt import sparsegpt_levels
from pruneflow.runtime import resolve_device

log = logging.getLogger(__name__)


class _Phase:
    """Logs a phase's wall and CPU seconds at DEBUG (CPU time is the honest figure on a shared
    machine, where wall time mostly measures the neighbours)."""

    def __init__(self, label: str):
        self.label = label

    def __enter__(self) -> _Phase:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        log.debug(
            "%s: %.2fs wall, %.2fs cpu",
            self.label,
            time.perf_counter() - self.wall,
            time.process_time() - self.cpu,
        )


SOLVERS = ("auto", "exact", "sparsegpt")
EXACT_MAX_WORK = 2**41


@dataclass
class LayerSolution:
    """Every level's weight for one layer, and what it costs.

    ``weights``: (levels, *weight.shape) in the weight's dtype, on the CPU; level 0 is the
    input weight. ``loss``: the dampened objective ``sum_rows 1/2 dw^T H_damped dw`` per level
    (float64). ``rel_error``: undampened output error relative to ``||W X||^2`` per level.
    ``nnz``: nonzeros per level. ``solver``: 'exact' or 'sparsegpt'. ``damp``: the relative
    dampening actually used. Exact solver only: ``order`` (rows x d, column removal order per
    row), ``increments`` (rows x d, float64: each removal's loss increment, in that order) and
    ``counts`` (rows x levels: removals per row at each level).
    """

    sparsities: list[float]
    weights: Tensor
    loss: Tensor
    rel_error: Tensor
    nnz: list[int]
    solver: str
    damp: float
    seconds: float
    order: Tensor | None = None
    increments: Tensor | None = None
    counts: Tensor | None = None

    def solver_of(self, level: int) -> str:
        return "dense" if level == 0 else self.solver


def zeros_for(sparsity: float, numel: int) -> int:
    """Zeros a level must have: ``ceil(s * numel)``."""
    return min(numel, math.ceil(sparsity * numel))


def check_grid(sparsities: Sequence[float]) -> list[float]:
    grid = [float(s) for s in sparsities]
    if not grid or grid[0] != 0.0:
        raise PruneflowError(
            f"the sparsity grid must start with the dense level 0.0, got {grid[:3]}"
        )
    if any(not (0.0 <= s <= 1.0) for s in grid):
        raise PruneflowError("sparsities must lie in [0, 1]")
    if any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
        raise PruneflowError("the sparsity grid must be strictly increasing")
    return grid


def rel_error(weight: Tensor, pruned: Tensor, hessian: Hessian | Tensor) -> float:
    """``||W X - W' X||^2 / ||W X||^2`` on the calibration inputs behind ``hessian``."""
    h = hessian if isinstance(hessian, Hessian) else Hessian.from_matrix(hessian)
    w = weight.detach().flatten(1).to(torch.float64)
    delta = pruned.detach().flatten(1).to(torch.float64) - w
    num, den = _quadratic(h, delta), _quadratic(h, w)
    return float(num / den) if den > 0 else 0.0


def _quadratic(h: Hessian, x: Tensor) -> Tensor:
    x = x.to(h.rows.device if h.rows is not None else h.matrix.device)  # type: ignore[union-attr]
    if h.rows is not None:
        return (x @ h.factor().T).square().sum()
    return ((x @ h.dense()) * x).sum()


def solve_layer(
    weight: Tensor,
    hessian: Hessian | Tensor,
    sparsities: Sequence[float],
    *,
    damp: float = 0.01,
    solver: str = "auto",
    device: str | torch.device = "auto",
    name: str = "layer",
    row_dtype: torch.dtype = torch.float32,
    batch_bytes: int = 256 << 20,
    exact_max_work: float = EXACT_MAX_WORK,
    refit_max_kept: int = 512,
    progress: bool | str = "auto",
) -> LayerSolution:
    """Reconstructed weights of one layer at every sparsity in ``sparsities`` (level 0 = 0.0).

    ``weight``: the layer's weight, (rows, ...) with ``weight.flatten(1)`` matching the
    Hessian's columns (conv: ``(C_out, C_in*kh*kw)``). ``hessian``: from
    :func:`capture_hessians` or a dense float64 matrix. ``row_dtype``: precision of the row
    loops (both exact passes, SparseGPT's loop) once ``H^-1`` is formed in float64; float32
    matches float64 to ~1e-8 in rel_error and ~5e-6 in the weights (measured on smallcnn's
    conv5), at about half the time. ``batch_bytes`` caps the solvers' per-batch working
    memory. ``refit_max_kept``: SparseGPT rows keeping at most this many weights are refit by
    exact least squares (0: never).
    """
    start = time.perf_counter()
    grid = check_grid(sparsities)
    if solver not in SOLVERS:
        raise PruneflowError(f"unknown solver '{solver}'; choose one of {', '.join(SOLVERS)}")
    dev = resolve_device(device)
    h = hessian if isinstance(hessian, Hessian) else Hessian.from_matrix(hessian)
    w_orig = weight.detach()
    if w_orig.ndim < 2:
        raise PruneflowError(f"layer '{name}': weight must have >= 2 dims, got {w_orig.ndim}")
    w = w_orig.flatten(1).to(dev, torch.float64)
    rows, d = w.shape
    if h.dim != d:
        raise PruneflowError(
            f"layer '{name}': the weight has {d} columns but the Hessian is {h.dim} x {h.dim}"
        )
    if not torch.isfinite(w).all():
        raise PruneflowError(f"layer '{name}': the weight has NaN/Inf entries")
    if solver == "auto":
        solver = "exact" if rows * float(d) ** 3 <= exact_max_work else "sparsegpt"
    zeros = [zeros_for(s, rows * d) for s in grid[1:]]

    with exact_fp32():
        with _Phase(f"{name}: dampening"):
            damped = dampen(h, damp, device=dev, dense=solver == "exact", name=name)
        work = w.clone()
        work[:, damped.dead] = 0.0  # dead inputs: free to remove, first
        extra: dict[str, Tensor] = {}
        with make_progress(progress) as bar:
            if solver == "exact":
                levels, loss, extra = _run_exact(
                    work, damped, zeros, row_dtype, batch_bytes, name, bar
                )
            else:
                with _Phase(f"{name}: SparseGPT"):
                    levels, loss = _run_sparsegpt(
                        work, damped, zeros, row_dtype, batch_bytes, name, bar
                    )
                with _Phase(f"{name}: refit"):
                    refit_sparse_rows(levels, work, damped, refit_max_kept, dtype=row_dtype)
        with _Phase(f"{name}: errors"):
            errs = _relative_errors(levels, loss, work, w, damped)

    out = torch.empty((len(grid), *w_orig.shape), dtype=w_orig.dtype)
    out[0] = w_orig.cpu()
    out[1:] = levels.to("cpu", w_orig.dtype).view(len(grid) - 1, *w_orig.shape)
    nnz = [int(torch.count_nonzero(out[i])) for i in range(len(grid))]
    return LayerSolution(
        sparsities=grid,
        weights=out,
        loss=torch.cat([torch.zeros(1, dtype=torch.float64), loss.cpu()]),
        rel_error=torch.tensor([0.0, *errs], dtype=torch.float64),
        nnz=nnz,
        solver=solver,
        damp=damped.damp,
        seconds=time.perf_counter() - start,
        **{k: v.cpu() for k, v in extra.items()},
    )


def _relative_errors(
    levels: Tensor, loss: Tensor, work: Tensor, w: Tensor, damped: Damped
) -> list[float]:
    """rel_error per level, measured on the stored weights in float64; fills ``loss`` too.

    Measured rather than summed from the solvers' increments: those carry the solvers'
    float32 rounding, and the undampened error is their difference with the dampening term.
    """
    raw = damped.raw_quadratic(w)
    errs = []
    for i in range(levels.shape[0]):
        delta = levels[i].to(torch.float64) - work
        num = damped.raw_quadratic(delta)
        loss[i] = 0.5 * (num + (delta.square() * damped.added).sum())
        errs.append(float(num / raw) if raw > 0 else 0.0)
    return errs


def _run_exact(
    work: Tensor,
    damped: Damped,
    zeros: list[int],
    row_dtype: torch.dtype,
    batch_bytes: int,
    name: str,
    bar,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    rows, d = work.shape
    assert damped.chol is not None
    ginv = inverse_from_cholesky(damped.chol)
    itemsize = torch.finfo(row_dtype).bits // 8
    # pass 1 holds one (m x m) block per row plus its compacted copy during a fold
    b1 = max(1, min(rows, batch_bytes // (2 * d * d * itemsize)))
    task = bar.add_task(f"{name}: OBS order", total=rows)
    with _Phase(f"{name}: pass 1, {b1} rows per batch"):
        order, incs = greedy_order(
            work,
            ginv,
            damped.diag,
            dtype=row_dtype,
            rows_per_batch=b1,
            on_batch=lambda n: bar.advance(task, n),
        )
    counts = select_counts(incs, zeros)
    # pass 2 holds the l vectors of a row batch on the active columns
    b2 = max(1, min(rows, batch_bytes // (d * d * itemsize)))
    task = bar.add_task(f"{name}: snapshots", total=rows)
    with _Phase(f"{name}: pass 2, {b2} rows per batch"):
        levels, incs64 = snapshot_levels(
            work,
            ginv,
            order,
            counts,
            dtype=row_dtype,
            rows_per_batch=b2,
            name=name,
            on_batch=lambda n: bar.advance(task, n),
        )
    cum = torch.cat(
        [torch.zeros(rows, 1, dtype=torch.float64, device=work.device), incs64.cumsum(1)], dim=1
    )
    loss = cum.gather(1, counts).sum(0)
    counts = torch.cat([torch.zeros_like(counts[:, :1]), counts], dim=1)  # level 0: none
    return levels, loss, {"order": order, "increments": incs64, "counts": counts}


def _run_sparsegpt(
    work: Tensor,
    damped: Damped,
    zeros: list[int],
    row_dtype: torch.dtype,
    batch_bytes: int,
    name: str,
    bar,
) -> tuple[Tensor, Tensor]:
    rows, d = work.shape
    itemsize = torch.finfo(row_dtype).bits // 8
    # dense H: every stacked level carries its own working rows (rows x d); low-rank H: only
    # its rows x r accumulator, so all levels go in one pass (fewest Python steps)
    per_level = rows * (d if damped.factor is None else damped.factor.shape[0]) * itemsize
    per_pass = max(1, min(len(zeros), batch_bytes // (2 * per_level)))
    task = bar.add_task(f"{name}: SparseGPT levels", total=len(zeros))
    log.debug("%s: SparseGPT, %d levels per pass", name, per_pass)
    return sparsegpt_levels(
        work,
        damped,
        zeros,
        dtype=row_dtype,
        levels_per_pass=per_pass,
        on_levels=lambda n: bar.advance(task, n),
    )
