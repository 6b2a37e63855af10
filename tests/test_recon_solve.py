"""Layer solvers: exact OBS against a naive reference, the loss identity, exact zero counts."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from pruneflow.errors import PruneflowError
from pruneflow.recon import Hessian, rel_error, solve_layer, zeros_for
from pruneflow.recon.baselines import magnitude_prune
from pruneflow.recon.damping import dampen, inverse_from_cholesky
from pruneflow.recon.obs import greedy_order, snapshot_levels
from pruneflow.recon.sparsegpt import sparsegpt_levels

GRID = [0.0, 0.3, 0.5, 0.7, 0.85, 0.95, 0.99]
CPU = torch.device("cpu")


def _problem(rows: int, d: int, n: int, seed: int = 0, dead: tuple[int, ...] = ()):
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) @ (torch.eye(d) + mix)
    x[:, list(dead)] = 0.0
    weight = torch.randn(rows, d, generator=gen)
    return weight, Hessian(d, n, matrix=2 / n * x.T @ x), x


def _naive_obs(w: torch.Tensor, g: torch.Tensor) -> tuple[list[int], list[float]]:
    """Textbook greedy OBS on one row with a full inverse, float64."""
    w, g = w.clone(), g.clone()
    alive = torch.ones_like(w, dtype=torch.bool)
    order, incs = [], []
    for _ in range(w.numel()):
        score = torch.where(alive, w * w / g.diagonal(), torch.inf)
        p = int(score.argmin())
        incs.append(float(w[p] ** 2 / (2 * g[p, p])))
        w -= w[p] / g[p, p] * g[p]
        g -= torch.outer(g[:, p], g[p]) / g[p, p]
        w[p], alive[p] = 0.0, False
        order.append(p)
    return order, incs


def test_blocked_greedy_matches_naive_obs_and_replay_is_exact() -> None:
    weight, h, _ = _problem(rows=5, d=40, n=200, dead=(3,))
    damped = dampen(h, 0.01, device=CPU, dense=True)
    ginv = inverse_from_cholesky(damped.chol)
    work = weight.double().clone()
    work[:, 3] = 0.0
    # small blocks force several folds and compactions
    order, incs = greedy_order(
        work, ginv, damped.diag, dtype=torch.float64, rows_per_batch=2, block=4
    )
    for r in range(5):
        ref_order, ref_incs = _naive_obs(work[r], ginv)
        assert order[r].tolist() == ref_order
        torch.testing.assert_close(incs[r], torch.tensor(ref_incs, dtype=torch.float64))
    assert order[:, 0].tolist() == [3] * 5  # the dead input goes first, for free
    counts = torch.tensor([[0, 7, 40], [1, 2, 39], [0, 0, 0], [40, 40, 40], [5, 6, 9]])
    states, incs2 = snapshot_levels(work, ginv, order, counts, rows_per_batch=3, block=8)
    torch.testing.assert_close(incs2, incs)
    for r in range(5):
        for lv in range(3):
            c = int(counts[r, lv])
            removed = order[r, :c]
            assert bool((states[lv, r, removed] == 0).all())
            # the replayed state is the exact least-squares optimum on its mask
            keep = torch.ones(40, dtype=torch.bool)
            keep[removed] = False
            hk = damped.matrix[keep][:, keep]
            rhs = damped.matrix[keep][:, ~keep] @ work[r, ~keep]
            best = work[r, keep] + torch.linalg.solve(hk, rhs)
            torch.testing.assert_close(states[lv, r, keep], best)


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 1e-4), (torch.float64, 1e-6)])
def test_increments_sum_to_the_loss_of_the_stored_rows(dtype: torch.dtype, rtol: float) -> None:
    weight, h, _ = _problem(rows=24, d=48, n=300, dead=(0, 17))
    sol = solve_layer(weight, h, GRID, solver="exact", row_dtype=dtype, progress=False)
    hd = dampen(h, 0.01, device=CPU, dense=True).matrix
    work = weight.double().clone()
    work[:, [0, 17]] = 0.0
    for lv in range(1, len(GRID)):
        dw = sol.weights[lv].double() - work
        half = 0.5 * ((dw @ hd) * dw).sum(1)
        acc = torch.stack([sol.increments[r, : sol.counts[r, lv]].sum() for r in range(24)])
        # float64 rows: only the float32 storage of the weights rounds
        torch.testing.assert_close(acc, half, rtol=rtol, atol=1e-9 * float(half.max()))
        assert float(sol.loss[lv]) == pytest.approx(float(half.sum()), rel=1e-9)


@pytest.mark.parametrize("solver", ["exact", "sparsegpt"])
def test_every_level_has_exactly_ceil_s_numel_zeros(solver: str) -> None:
    weight, h, _ = _problem(rows=7, d=130, n=80, dead=(5, 6, 7))  # rank 80 < 130, block edge
    weight[2, 40:60] = 0.0  # zeros already there are removed first
    grid = [0.0, 0.04, 0.1, 1 / 3, 0.5, 0.9, 0.99, 1.0]
    sol = solve_layer(weight, h, grid, solver=solver, progress=False)
    assert sol.solver == solver and sol.solver_of(0) == "dense"
    assert torch.equal(sol.weights[0], weight)
    for lv, s in enumerate(grid):
        if lv == 0:
            continue
        zeros = int((sol.weights[lv] == 0).sum())
        assert zeros == max(zeros_for(s, weight.numel()), 41)  # 41 zeros exist from the start
        assert sol.nnz[lv] == weight.numel() - zeros
        assert math.isfinite(float(sol.rel_error[lv]))


def test_exact_levels_are_nested_and_beat_magnitude() -> None:
    weight, h, _ = _problem(rows=16, d=32, n=400, seed=3)
    sol = solve_layer(weight, h, GRID, progress=False)
    assert sol.solver == "exact"
    for lv in range(1, len(GRID)):
        prev, cur = sol.weights[lv - 1] == 0, sol.weights[lv] == 0
        assert bool((cur | ~prev).all())  # every zero of the previous level stays zero
        assert torch.equal(sol.counts[:, lv] >= sol.counts[:, lv - 1], torch.ones(16, dtype=bool))
        assert float(sol.rel_error[lv]) == pytest.approx(
            rel_error(weight, sol.weights[lv], h), rel=1e-6
        )
        assert float(sol.rel_error[lv]) < rel_error(weight, magnitude_prune(weight, GRID[lv]), h)


def test_float32_greedy_pass_gives_the_float64_answer() -> None:
    weight, h, _ = _problem(rows=10, d=60, n=300, seed=5)
    a = solve_layer(weight, h, GRID, row_dtype=torch.float32, progress=False)
    b = solve_layer(weight, h, GRID, row_dtype=torch.float64, progress=False)
    torch.testing.assert_close(a.rel_error, b.rel_error, rtol=1e-4, atol=1e-7)


def test_sparsegpt_low_rank_equals_dense_and_auto_picks_by_size() -> None:
    weight, _, x = _problem(rows=6, d=300, n=50, seed=2, dead=(9,))
    low = Hessian(300, 50, rows=x.clone())
    dense = Hessian(300, 50, matrix=low.dense())
    a = solve_layer(weight, low, GRID, solver="sparsegpt", progress=False)
    b = solve_layer(weight, dense, GRID, solver="sparsegpt", progress=False)
    torch.testing.assert_close(a.weights, b.weights, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(a.rel_error, b.rel_error, rtol=1e-4, atol=1e-7)
    assert torch.equal(a.weights == 0, b.weights == 0)
    # the errors it pushes right are consistent with the weights it returns
    damped = dampen(dense, 0.01, device=CPU, dense=True)
    work = weight.double().clone()
    work[:, 9] = 0.0
    zeros = [zeros_for(s, weight.numel()) for s in GRID[1:]]
    levels, loss = sparsegpt_levels(work, damped, zeros, dtype=torch.float64, block=32)
    dw = levels - work
    torch.testing.assert_close(loss, 0.5 * ((dw @ damped.matrix) * dw).sum((1, 2)))
    mags = [rel_error(weight, magnitude_prune(weight, s), low) for s in GRID[1:]]
    assert sum(a.rel_error[1:].tolist()) < 0.5 * sum(mags)
    auto = solve_layer(weight, low, GRID, exact_max_work=1e6, progress=False)
    assert auto.solver == "sparsegpt" and auto.order is None
    assert solve_layer(weight, low, GRID, progress=False).solver == "exact"


def test_singular_hessians_and_bad_inputs() -> None:
    weight = torch.randn(3, 2)
    indefinite = torch.tensor([[1.0, 3.0], [3.0, 1.0]], dtype=torch.float64)
    with pytest.raises(PruneflowError, match="layer 'fc9' is singular and dampening cannot fix"):
        solve_layer(weight, indefinite, GRID, name="fc9", progress=False)
    nan = torch.full((2, 2), float("nan"), dtype=torch.float64)
    with pytest.raises(PruneflowError, match="layer 'fc9' has NaN/Inf"):
        solve_layer(weight, nan, GRID, name="fc9", progress=False)
    singular = torch.ones(2, 2, dtype=torch.float64)  # PSD, rank 1: damp=0 is raised
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sol = solve_layer(weight, singular, GRID, damp=0.0, progress=False)
    assert sol.damp > 0 and any("used damp=" in str(c.message) for c in caught)
    with pytest.raises(PruneflowError, match="3 columns but the Hessian is 2 x 2"):
        solve_layer(torch.randn(2, 3), singular, GRID, progress=False)
    with pytest.raises(PruneflowError, match="start with the dense level"):
        solve_layer(weight, singular, [0.5, 0.6], progress=False)
    with pytest.raises(PruneflowError, match="unknown solver"):
        solve_layer(weight, singular, GRID, solver="obs", progress=False)


def test_device_choice() -> None:
    weight, h, _ = _problem(rows=4, d=12, n=50)
    if not torch.cuda.is_available():
        with pytest.raises(PruneflowError, match="CUDA is not available"):
            solve_layer(weight, h, GRID, device="cuda", progress=False)
        return
    cpu = solve_layer(weight, h, GRID, device="cpu", progress=False)
    gpu = solve_layer(weight, h, GRID, device="cuda", progress=False)
    torch.testing.assert_close(cpu.rel_error, gpu.rel_error, rtol=1e-4, atol=1e-7)


def test_sparsegpt_refit_makes_sparse_rows_exact_least_squares() -> None:
    weight, h, _ = _problem(rows=8, d=40, n=200, seed=4)
    hd = dampen(h, 0.01, device=CPU, dense=True).matrix
    plain = solve_layer(weight, h, GRID, solver="sparsegpt", refit_max_kept=0, progress=False)
    sol = solve_layer(weight, h, GRID, solver="sparsegpt", refit_max_kept=40, progress=False)
    for lv in range(1, len(GRID)):
        assert torch.equal(sol.weights[lv] == 0, plain.weights[lv] == 0)  # same masks
        assert float(sol.loss[lv]) <= float(plain.loss[lv]) * (1 + 1e-6)
        for r in range(8):
            keep = sol.weights[lv, r] != 0
            if keep.any():
                best = torch.linalg.solve(hd[keep][:, keep], (hd @ weight[r].double())[keep])
                torch.testing.assert_close(
                    sol.weights[lv, r, keep].double(), best, rtol=1e-3, atol=1e-5
                )
