"""SPDY's sensitivity search: quality, memoization, stopping rules, determinism and resume.

The instances are small (6 layers, 8 levels) with a hidden per-layer sensitivity, so the search
has something real to find, and ``evaluate`` is a cheap deterministic function of the profile.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from pruneflow.errors import PruneflowError
from pruneflow.io import read_parquet, write_parquet
from pruneflow.spdy.baselines import prior_profile, uniform_profile
from pruneflow.spdy.dp import DPSolver
from pruneflow.spdy.search import (
    HISTORY_COLUMNS,
    SearchState,
    error_prior,
    errors_from_c,
    sensitivity_search,
    state_from_json,
    state_to_json,
)

FAST = {"k": 30, "max_no_improvement": 15, "delta": 0.5}  # d = 3, 2, 1


class Interrupted(Exception):
    pass


def instance(seed: int, n_layers: int = 6, n_levels: int = 8):
    """Times roughly falling with density (with noise), budget ~55% of dense, and a loss."""
    rng = np.random.default_rng(seed)
    dense = rng.integers(20, 60, n_layers)
    density = 0.7 ** np.arange(n_levels)
    noise = rng.integers(-2, 3, (n_layers, n_levels))
    times = np.rint(dense[:, None] * (0.25 + 0.75 * density[None, :]) + noise).astype(np.int64)
    budget = int(times[:, 0].sum() * 0.55)
    sensitivity = rng.uniform(0.05, 5, n_layers) ** 2  # hidden from the search
    sparsity = 1 - density

    def evaluate(profile: tuple[int, ...]) -> float:
        jitter = np.random.default_rng(list(profile)).random() * 1e-3  # seeded by the profile
        return float(np.sum(sensitivity * sparsity[list(profile)] ** 3)) + jitter

    return times, budget, evaluate


class Recorder:
    """Wraps ``evaluate``: records calls and can raise on the n-th one."""

    def __init__(self, fn, fail_at: int | None = None) -> None:
        self.fn, self.fail_at, self.calls = fn, fail_at, []

    def __call__(self, profile):
        if self.fail_at is not None and len(self.calls) + 1 == self.fail_at:
            raise Interrupted(f"call {self.fail_at}")
        self.calls.append(profile)
        return self.fn(profile)


def reference_search(times, budget, evaluate, k, delta, max_no_improvement, rule, seed):
    """SPDY's search written out plainly, without memo or state: evaluates every candidate."""
    n_layers, n_levels = times.shape
    solver = DPSolver(times, budget)
    rng = np.random.default_rng(seed)
    losses, best_c, best = [], None, np.inf

    def score(c):
        levels = solver.solve(errors_from_c(c, n_levels)).levels
        return evaluate(tuple(levels.tolist()))

    for _ in range(k):
        c = rng.random(n_layers)
        loss = score(c)
        losses.append(loss)
        if loss < best:
            best_c, best = c, loss
    for d in range(max(1, round(delta * n_layers)), 0, -1):
        fails = tries = 0
        while (fails < max_no_improvement) if rule == "no_improvement" else (tries < k):
            c = best_c.copy()
            idx, vals = rng.integers(0, n_layers, size=d), rng.random(d)
            for j, v in zip(idx, vals, strict=True):
                c[j] = v
            loss = score(c)
            losses.append(loss)
            tries += 1
            if loss < best:
                best_c, best, fails = c, loss, 0
            else:
                fails += 1
    return losses, best_c, best


# --------------------------------------------------------------------------------------------


def test_error_model_is_formula_4() -> None:
    np.testing.assert_array_equal(error_prior(5), [0, 1 / 16, 4 / 16, 9 / 16, 1])
    c = np.array([0.5, 1.0, 0.0])
    e = errors_from_c(c, 5)
    assert e.shape == (3, 5)
    np.testing.assert_allclose(e, c[:, None] * (np.arange(5) / 4)[None, :] ** 2)


@pytest.mark.parametrize("seed", [3, 4, 7])
def test_search_beats_best_random_candidate_and_prior(seed: int) -> None:
    times, budget, evaluate = instance(seed)
    result = sensitivity_search(times, budget, evaluate, seed=seed)
    random_best = min(r["calib_loss"] for r in result.history if r["phase"] == "random")
    assert result.best_loss < random_best
    solver = DPSolver(times, budget)
    assert result.best_loss < evaluate(tuple(prior_profile(solver).tolist()))
    assert result.best_loss < evaluate(tuple(uniform_profile(times, budget).tolist()))
    # The reported best is consistent: the DP maps best_c onto best_profile, within budget.
    levels = solver.solve(errors_from_c(result.best_c, times.shape[1])).levels
    assert tuple(levels.tolist()) == result.best_profile
    assert times[np.arange(len(levels)), levels].sum() <= budget
    assert result.best_loss == evaluate(result.best_profile)
    assert result.best_loss == min(r["calib_loss"] for r in result.history)
    assert ((result.best_c >= 0) & (result.best_c <= 1)).all()


@pytest.mark.parametrize("rule", ["no_improvement", "fixed_k"])
def test_matches_plain_algorithm_without_memo(rule: str) -> None:
    """Memo hits change nothing: same losses, candidate for candidate, as scoring them all."""
    times, budget, evaluate = instance(1)
    opts = {"k": 25, "delta": 0.5, "max_no_improvement": 12, "seed": 5}
    result = sensitivity_search(times, budget, evaluate, local_rule=rule, **opts)
    losses, best_c, best = reference_search(times, budget, evaluate, rule=rule, **opts)
    assert [r["calib_loss"] for r in result.history] == losses
    np.testing.assert_array_equal(result.best_c, best_c)
    assert result.best_loss == best


def test_memoization_skips_repeated_profiles() -> None:
    times, budget, evaluate = instance(2)
    rec = Recorder(evaluate)
    result = sensitivity_search(times, budget, rec, seed=0, **FAST)
    hist = result.history
    assert result.evaluations == result.dp_calls == len(hist)
    assert len(rec.calls) == len(set(rec.calls)) == result.distinct_profiles
    assert sum(r["new_profile"] for r in hist) == result.distinct_profiles
    assert result.distinct_profiles < result.evaluations  # the DP does repeat profiles
    # every candidate that was a memo hit has the loss of an earlier scored one
    scored = {}
    for r in hist:
        if r["new_profile"]:
            scored.setdefault(r["calib_loss"], r["eval"])
        else:
            assert scored[r["calib_loss"]] < r["eval"]


def _runs(flags: list[bool]) -> list[int]:
    """Lengths of the runs of consecutive False."""
    runs, cur = [], 0
    for f in flags:
        cur = 0 if f else cur + 1
        runs.append(cur)
    return runs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_improvement_rule_ends_each_d_after_exactly_m_failures(seed: int) -> None:
    times, budget, evaluate = instance(seed + 3)
    m = 9
    result = sensitivity_search(
        times, budget, evaluate, seed=seed, k=20, delta=0.5, max_no_improvement=m
    )
    hist = result.history
    assert [r["phase"] for r in hist[:20]] == ["random"] * 20
    assert all(r["d"] == 0 for r in hist[:20])
    local = hist[20:]
    assert all(r["phase"] == "local" for r in local)
    ds = [r["d"] for r in local]
    assert ds == sorted(ds, reverse=True) and sorted(set(ds)) == [1, 2, 3]
    improved_somewhere = False
    for d in (3, 2, 1):
        flags = [r["improved"] for r in local if r["d"] == d]
        runs = _runs(flags)
        assert runs[-1] == m  # ended by exactly m failures in a row
        assert max(runs[:-1], default=0) < m  # and not earlier
        improved_somewhere |= any(flags)
    assert improved_somewhere  # the counter restart was exercised
    # 'improved' and 'best' agree with the losses
    best = np.inf
    for r in hist:
        assert r["improved"] == (r["calib_loss"] < best)
        best = min(best, r["calib_loss"])
        assert r["best"] == best


def test_fixed_k_rule_runs_k_candidates_per_d() -> None:
    times, budget, evaluate = instance(4)
    result = sensitivity_search(
        times, budget, evaluate, seed=2, k=11, delta=0.5, local_rule="fixed_k"
    )
    counts = Counter((r["phase"], r["d"]) for r in result.history)
    assert counts == {("random", 0): 11, ("local", 3): 11, ("local", 2): 11, ("local", 1): 11}


def test_delta_rounds_and_keeps_at_least_one() -> None:
    times, budget, evaluate = instance(0)  # 6 layers
    for delta, expected in [(0.0, 1), (0.1, 1), (0.25, 2), (1.0, 6)]:
        result = sensitivity_search(times, budget, evaluate, k=3, delta=delta, max_no_improvement=2)
        local_ds = [r["d"] for r in result.history if r["phase"] == "local"]
        assert local_ds[0] == expected and local_ds[-1] == 1


def test_same_seed_same_search_other_seed_differs() -> None:
    times, budget, evaluate = instance(5)
    a = sensitivity_search(times, budget, evaluate, seed=11, **FAST)
    b = sensitivity_search(times, budget, evaluate, seed=11, **FAST)
    c = sensitivity_search(times, budget, evaluate, seed=12, **FAST)
    assert a.history == b.history and a.best_profile == b.best_profile
    np.testing.assert_array_equal(a.best_c, b.best_c)
    assert a.history != c.history


# --------------------------------------------------------------------------------------------
# Checkpoint and resume


def _assert_same(a, b) -> None:
    assert a.history == b.history
    assert a.best_profile == b.best_profile and a.best_loss == b.best_loss
    np.testing.assert_array_equal(a.best_c, b.best_c)
    assert (a.dp_calls, a.distinct_profiles, a.evaluations) == (
        b.dp_calls,
        b.distinct_profiles,
        b.evaluations,
    )


@pytest.mark.parametrize("every", [1, 4])
@pytest.mark.parametrize("where", ["random", "local", "local-late"])
def test_resume_after_interruption_equals_uninterrupted(where: str, every: int) -> None:
    times, budget, evaluate = instance(3)
    full = sensitivity_search(times, budget, evaluate, seed=9, **FAST)
    random_calls = sum(r["new_profile"] for r in full.history if r["phase"] == "random")
    fail_at = {
        "random": random_calls // 2,
        "local": random_calls + 2,
        "local-late": full.distinct_profiles - 1,
    }[where]

    saved: list[str] = []
    rec = Recorder(evaluate, fail_at=fail_at)
    with pytest.raises(Interrupted):
        sensitivity_search(
            times,
            budget,
            rec,
            seed=9,
            checkpoint=lambda s: saved.append(state_to_json(s)),
            checkpoint_every=every,
            **FAST,
        )
    last = state_from_json(saved[-1])
    if every == 1 or where != "local":  # with every=4 the last save may precede the switch
        assert last.phase == ("random" if where == "random" else "local")
    assert last.candidates % every == 0 and last.candidates > 0

    rec2 = Recorder(evaluate)
    resumed = sensitivity_search(times, budget, rec2, seed=9, resume_state=last, **FAST)
    _assert_same(resumed, full)
    # Only profiles scored after the checkpoint are scored again (the memo was saved).
    assert len(rec.calls) + len(rec2.calls) >= full.distinct_profiles
    assert len(rec2.calls) == full.distinct_profiles - len(last.memo)
    assert not set(rec2.calls) & set(last.memo)


def test_resume_twice_and_from_dict_and_from_done() -> None:
    times, budget, evaluate = instance(6)
    full = sensitivity_search(times, budget, evaluate, seed=1, **FAST)
    saved: list[dict] = []

    def keep(state: SearchState) -> None:
        saved.append(json.loads(state_to_json(state)))  # plain JSON dicts, as read from disk

    state = None
    for fail_at in (5, 17):
        with pytest.raises(Interrupted):
            sensitivity_search(
                times,
                budget,
                Recorder(evaluate, fail_at=fail_at - (len(state["memo"]) if state else 0)),
                seed=1,
                resume_state=state,
                checkpoint=keep,
                **FAST,
            )
        state = saved[-1]
    final = sensitivity_search(
        times, budget, evaluate, seed=1, resume_state=state, checkpoint=keep, **FAST
    )
    _assert_same(final, full)
    assert saved[-1]["phase"] == "done"
    # resuming a finished search scores nothing and returns the same result
    again = sensitivity_search(
        times, budget, Recorder(evaluate, fail_at=1), seed=1, resume_state=saved[-1], **FAST
    )
    _assert_same(again, full)


def test_state_json_round_trip_is_exact() -> None:
    times, budget, evaluate = instance(2)
    states: list[SearchState] = []
    sensitivity_search(
        times, budget, evaluate, seed=3, checkpoint=states.append, checkpoint_every=7, **FAST
    )
    assert states[-1].phase == "done"
    for s in states:
        back = state_from_json(state_to_json(s))
        assert back.to_dict() == s.to_dict()
        assert back.memo == s.memo and back.best_c == s.best_c
    # checkpoints are independent snapshots, not views of the live state
    assert [s.candidates for s in states[:3]] == [7, 14, 21]


def test_resume_state_from_another_search_is_refused() -> None:
    times, budget, evaluate = instance(2)
    states: list[SearchState] = []
    sensitivity_search(times, budget, evaluate, seed=3, checkpoint=states.append, **FAST)
    with pytest.raises(PruneflowError, match="different search.*seed=3"):
        sensitivity_search(times, budget, evaluate, seed=4, resume_state=states[5], **FAST)
    with pytest.raises(PruneflowError, match="different search.*times_hash"):
        sensitivity_search(times + 1, budget + 6, evaluate, seed=3, resume_state=states[5], **FAST)
    with pytest.raises(PruneflowError, match="missing"):
        sensitivity_search(times, budget, evaluate, seed=3, resume_state={"phase": "random"})
    with pytest.raises(PruneflowError, match="not valid JSON"):
        state_from_json("{truncated")


# --------------------------------------------------------------------------------------------
# Output and validation


def test_history_frame_writes_to_parquet(tmp_path) -> None:
    times, budget, evaluate = instance(0)
    result = sensitivity_search(times, budget, evaluate, seed=0, **FAST)
    frame = result.history_frame()
    assert tuple(frame.columns) == HISTORY_COLUMNS
    assert list(frame["eval"]) == list(range(len(frame)))
    rows = np.arange(times.shape[0])
    profiles = {}
    for p in (tuple(int(x) for x in k) for k in [result.best_profile]):
        profiles[p] = int(times[rows, list(p)].sum())
    best_rows = frame[frame["calib_loss"] == result.best_loss]
    assert (best_rows["pred_time"] == profiles[result.best_profile]).all()
    assert (frame["pred_time"] <= budget).all()
    write_parquet(tmp_path / "search.parquet", frame)
    back = read_parquet(
        tmp_path / "search.parquet",
        {"eval": "i", "phase": "O", "d": "i", "calib_loss": "f", "best": "f", "new_profile": "b"},
    )
    assert back["phase"].tolist() == frame["phase"].tolist()


def test_progress_flag_is_quiet_off_a_terminal(capsys) -> None:
    times, budget, evaluate = instance(0)
    quiet = sensitivity_search(times, budget, evaluate, seed=0, progress=False, **FAST)
    shown = sensitivity_search(times, budget, evaluate, seed=0, progress=True, **FAST)
    assert quiet.history == shown.history
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_loss_names_the_profile(bad: float) -> None:
    times, budget, _ = instance(0)
    with pytest.raises(PruneflowError, match=r"non-finite calibration loss .* profile \[\d"):
        sensitivity_search(times, budget, lambda p: bad, **FAST)


def test_non_numeric_loss_is_refused() -> None:
    times, budget, _ = instance(0)
    with pytest.raises(PruneflowError, match="must return the calibration loss"):
        sensitivity_search(times, budget, lambda p: "low", **FAST)


def test_evaluate_errors_propagate_unchanged() -> None:
    times, budget, evaluate = instance(0)
    with pytest.raises(Interrupted):
        sensitivity_search(times, budget, Recorder(evaluate, fail_at=1))


@pytest.mark.parametrize(
    ("times", "budget", "kwargs", "match"),
    [
        (np.zeros((0, 4), dtype=int), 5, {}, "at least one prunable layer"),
        (np.ones((3, 1), dtype=int), 5, {}, "at least 2 sparsity levels"),
        (np.ones((3, 4), dtype=int), 1, {}, "infeasible"),
        (np.ones((3, 4), dtype=int), 5, {"k": 0}, "k must be"),
        (np.ones((3, 4), dtype=int), 5, {"max_no_improvement": 0}, "max_no_improvement"),
        (np.ones((3, 4), dtype=int), 5, {"delta": 1.5}, "delta"),
        (np.ones((3, 4), dtype=int), 5, {"local_rule": "anneal"}, "local_rule"),
        (np.ones((3, 4), dtype=int), 5, {"seed": -1}, "seed"),
        (np.ones((3, 4), dtype=int), 5, {"checkpoint_every": 0}, "checkpoint_every"),
    ],
)
def test_invalid_inputs(times, budget, kwargs, match) -> None:
    with pytest.raises(PruneflowError, match=match):
        sensitivity_search(times, budget, lambda p: 0.0, **kwargs)
