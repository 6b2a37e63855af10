"""SPDY's search for the layer sensitivities ``c`` (Frantar & Alistarh, ICML 2022: the learned
layer-wise error scores and their local search).

Error model
-----------
SPDY never measures a per-layer error. It uses one fixed prior per level index and learns only
a per-layer scale (SPDY's error prior, as in the authors' code)::

    e[l, i] = c_l * (i / (|S| - 1))**2,    c in [0, 1]^L,   i = 0 (dense) .. |S| - 1

Only the relative scale of ``c`` matters to the DP, hence the unit cube.

Search
------
Every *candidate* is a vector ``c``: ``c -> errors -> DP (exact, pruneflow.spdy.dp) -> profile
(one level index per layer) -> evaluate(profile)``, the calibration loss of the model stitched
from the reconstruction database. The loss, not the DP's objective, is what the search
minimizes; the DP only maps ``c`` onto the time budget's Pareto front.

1. **Random phase.** ``k`` vectors ``c ~ U[0, 1]^L``; keep the best.
2. **Local phase.** For ``d = max(1, round(delta * L))`` down to 1: copy the best ``c``, pick
   ``d`` layer indices uniformly *with replacement*, redraw those coordinates from ``U[0, 1]``
   and score. A strict improvement replaces the best at once. ``round`` is Python's (halves to
   even), as in the authors' code.

   - ``local_rule="no_improvement"`` (default; the authors' code): stay at
     ``d`` until ``max_no_improvement`` candidates *in a row* fail to improve; every
     improvement restarts that count.
   - ``local_rule="fixed_k"``: exactly ``k`` candidates per ``d`` (a fixed budget per ``d``).

   The no-improvement rule always terminates: the best loss strictly falls on every
   improvement and the memo (below) makes the loss a function of the profile, of which there
   are finitely many.

Memoization
-----------
The DP maps whole regions of ``c`` onto the same profile, so many candidates repeat a profile
already scored. Those take the memoized loss instead of a new (expensive) evaluation. They
still count as candidates in every counter and in the history, exactly as if scored, so the
search's course never depends on what the memo held. ``distinct_profiles`` counts the
evaluations actually made.

Determinism and resume
----------------------
One ``numpy.random.Generator`` (PCG64, from ``seed``) makes every random choice, in a fixed
order per candidate: the random phase draws ``rng.random(L)``; the local phase draws
``rng.integers(0, L, d)`` and then ``rng.random(d)``. (The authors' local search used Python's
unseeded ``random`` and was not repeatable.) Same inputs and seed give the same history.

The whole search state between two candidates (phase, ``d``, counters, best ``c``/profile/loss,
the generator's ``bit_generator.state``, the memo and the history) is a :class:`SearchState`,
which round-trips exactly through JSON (:func:`state_to_json` / :func:`state_from_json`).
``checkpoint(state)`` is called after every ``checkpoint_every``-th candidate and once when the
search ends. Passing the last checkpoint back as ``resume_state`` re-draws exactly the
candidates that followed it, so an interrupted and resumed search ends with the same profile,
history and counters as an uninterrupted one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from pruneflow.errors import PruneflowError
from pruneflow.spdy.dp import ChainDPSolver, DPSolver

__all__ = [
    "HISTORY_COLUMNS",
    "Profile",
    "SearchResult",
    "SearchState",
    "error_prior",
    "errors_from_c",
    "sensitivity_search",
    "state_from_json",
    "state_to_json",
]

Profile = tuple[int, ...]
LocalRule = Literal["no_improvement", "fixed_k"]

HISTORY_COLUMNS = (
    "eval",
    "phase",
    "d",
    "calib_loss",
    "pred_time",
    "best",
    "new_profile",
    "improved",
)

_STATE_VERSION = 1
_PHASES = ("random", "local", "done")


def error_prior(n_levels: int) -> np.ndarray:
    """``(i / (|S| - 1))**2`` for ``i = 0 .. |S| - 1``: formula (4) with ``c = 1``."""
    if isinstance(n_levels, bool) or not isinstance(n_levels, int | np.integer):
        raise PruneflowError(f"n_levels must be an integer, got {n_levels!r}")
    if n_levels < 2:
        raise PruneflowError(
            f"the SPDY error model needs at least 2 sparsity levels (|S| = {n_levels}); "
            f"it divides the level index by |S| - 1"
        )
    return (np.arange(n_levels, dtype=np.float64) / (n_levels - 1)) ** 2


def errors_from_c(c: ArrayLike, n_levels: int) -> np.ndarray:
    """Error matrix ``[L, |S|]`` with ``e[l, i] = c[l] * (i / (|S| - 1))**2``."""
    vec = np.asarray(c, dtype=np.float64)
    if vec.ndim != 1:
        raise PruneflowError(f"c must be a vector [layers], got shape {vec.shape}")
    return vec[:, None] * error_prior(n_levels)[None, :]


# --------------------------------------------------------------------------------------------
# State


@dataclass
class SearchState:
    """Everything the search needs to continue after the last completed candidate.

    ``config`` fingerprints the search (sizes, budget, a hash of the times, every search
    option and the seed) so that a state cannot silently resume a different search.
    ``tries`` counts candidates in the current phase (random) or at the current ``d`` (local).
    ``memo`` maps every scored profile to its loss, in scoring order.
    """

    config: dict[str, Any]
    phase: str = "random"
    d: int = 0
    tries: int = 0
    no_improvement: int = 0
    best_c: list[float] | None = None
    best_profile: Profile | None = None
    best_loss: float | None = None
    rng_state: dict[str, Any] = field(default_factory=dict)
    memo: dict[Profile, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    dp_calls: int = 0

    @property
    def candidates(self) -> int:
        """Candidates completed so far (scored or taken from the memo)."""
        return len(self.history)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (tuples become lists, the memo a list of ``[profile, loss]``)."""
        return {
            "version": _STATE_VERSION,
            "config": dict(self.config),
            "phase": self.phase,
            "d": self.d,
            "tries": self.tries,
            "no_improvement": self.no_improvement,
            "best_c": None if self.best_c is None else [float(x) for x in self.best_c],
            "best_profile": None if self.best_profile is None else list(self.best_profile),
            "best_loss": self.best_loss,
            "rng_state": copy.deepcopy(self.rng_state),
            "memo": [[list(p), loss] for p, loss in self.memo.items()],
            "history": [dict(row) for row in self.history],
            "dp_calls": self.dp_calls,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchState:
        """Inverse of :meth:`to_dict`; a malformed dict raises :class:`PruneflowError`."""
        if not isinstance(data, Mapping):
            raise PruneflowError(f"search resume state must be a JSON object, got {type(data)}")
        keys = (
            "version config phase d tries no_improvement best_c best_profile best_loss "
            "rng_state memo history dp_calls"
        ).split()
        missing = [k for k in keys if k not in data]
        if missing:
            raise PruneflowError(f"search resume state is missing {', '.join(missing)}")
        if data["version"] != _STATE_VERSION:
            raise PruneflowError(
                f"search resume state has version {data['version']!r}; this pruneflow reads "
                f"version {_STATE_VERSION}"
            )
        if data["phase"] not in _PHASES:
            raise PruneflowError(f"search resume state has unknown phase {data['phase']!r}")
        try:
            state = cls(
                config=dict(data["config"]),
                phase=str(data["phase"]),
                d=int(data["d"]),
                tries=int(data["tries"]),
                no_improvement=int(data["no_improvement"]),
                best_c=None if data["best_c"] is None else [float(x) for x in data["best_c"]],
                best_profile=(
                    None if data["best_profile"] is None else _profile(data["best_profile"])
                ),
                best_loss=None if data["best_loss"] is None else float(data["best_loss"]),
                rng_state=copy.deepcopy(dict(data["rng_state"])),
                memo={_profile(p): float(loss) for p, loss in data["memo"]},
                history=[dict(row) for row in data["history"]],
                dp_calls=int(data["dp_calls"]),
            )
        except (TypeError, ValueError) as exc:
            raise PruneflowError(f"search resume state is malformed: {exc}") from exc
        if (state.best_loss is None) != (state.phase == "random" and state.tries == 0):
            raise PruneflowError(
                "search resume state is inconsistent: a best loss exists exactly when at least "
                "one candidate has been scored"
            )
        return state

    def snapshot(self) -> SearchState:
        """An independent copy (the search keeps mutating its own state)."""
        return SearchState.from_dict(self.to_dict())


def state_to_json(state: SearchState) -> str:
    """Serialize a :class:`SearchState`; floats and the generator state round-trip exactly."""
    return json.dumps(state.to_dict(), allow_nan=False, sort_keys=True)


def state_from_json(text: str | bytes) -> SearchState:
    """Inverse of :func:`state_to_json`."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PruneflowError(f"search resume state is not valid JSON: {exc}") from exc
    return SearchState.from_dict(data)


def _profile(levels: Any) -> Profile:
    return tuple(int(x) for x in levels)


# --------------------------------------------------------------------------------------------
# Result


@dataclass
class SearchResult:
    """Outcome of :func:`sensitivity_search`.

    ``evaluations`` counts candidates (each one a DP call, so it equals ``dp_calls``);
    ``distinct_profiles`` counts the calls to ``evaluate`` (memo misses). ``history`` has one
    dict per candidate with the keys :data:`HISTORY_COLUMNS`.
    """

    best_c: np.ndarray
    best_profile: Profile
    best_loss: float
    history: list[dict[str, Any]]
    dp_calls: int
    distinct_profiles: int
    evaluations: int

    def history_frame(self) -> pd.DataFrame:
        """The history as a DataFrame with fixed column order and dtypes (for search.parquet).

        ``pred_time`` is in time buckets; multiply by ``Discretized.bucket_ms`` for ms.
        """
        frame = pd.DataFrame(self.history, columns=list(HISTORY_COLUMNS))
        return frame.astype(
            {
                "eval": "int64",
                "phase": "object",
                "d": "int64",
                "calib_loss": "float64",
                "pred_time": "int64",
                "best": "float64",
                "new_profile": "bool",
                "improved": "bool",
            }
        )


# --------------------------------------------------------------------------------------------
# The search


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise PruneflowError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _times_hash(times: np.ndarray) -> str:
    arr = np.ascontiguousarray(times, dtype=np.float64)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _bucket_time(t: np.ndarray, rows: np.ndarray, levels: np.ndarray) -> int:
    """A profile's time in buckets: ``t[l, s_l]``, or ``t[l, s_{l-1}, s_l]`` for chain times."""
    if t.ndim == 2:
        return int(t[rows, levels].astype(np.int64).sum())
    prev = np.concatenate([[0], levels[:-1]])
    return int(t[rows, prev, levels].astype(np.int64).sum())


def _check_loss(value: Any, profile: Profile) -> float:
    try:
        loss = float(value)
    except (TypeError, ValueError):
        raise PruneflowError(
            f"evaluate returned {value!r} ({type(value).__name__}) for profile {list(profile)}; "
            f"it must return the calibration loss as a number"
        ) from None
    if not math.isfinite(loss):
        raise PruneflowError(
            f"evaluate returned a non-finite calibration loss ({loss}) for profile "
            f"{list(profile)} (level index per layer); the stitched model diverges or the "
            f"loss overflowed"
        )
    return loss


def _progress(enabled: bool) -> Progress:
    # A live display in a log file is noise: show it only on a terminal.
    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} candidates, {task.fields[scored]} scored"),
        TextColumn("best {task.fields[best]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
        transient=True,
    )


def sensitivity_search(
    times: ArrayLike,
    budget: int,
    evaluate: Callable[[Profile], float],
    *,
    k: int = 100,
    delta: float = 0.1,
    max_no_improvement: int = 100,
    local_rule: LocalRule = "no_improvement",
    seed: int = 0,
    resume_state: SearchState | Mapping[str, Any] | None = None,
    checkpoint: Callable[[SearchState], None] | None = None,
    checkpoint_every: int = 1,
    progress: bool = False,
) -> SearchResult:
    """SPDY's search (Algorithm 4) for the sensitivities ``c`` under a time budget.

    ``times`` int [L, |S|] and ``budget`` are the discretized times (``discretize``); chain
    times int [L, |S|, |S|] (a layer's time given the previous layer's level too) are solved by
    :class:`~pruneflow.spdy.dp.ChainDPSolver`.
    ``evaluate(profile)`` gets a tuple of level indices (Python ints, one per layer) and returns
    the calibration loss of the stitched model; it should be deterministic (the memo assumes
    it). ``k``: random candidates, and with ``local_rule="fixed_k"`` also candidates per ``d``.
    ``checkpoint(state)`` receives an independent :class:`SearchState` after every
    ``checkpoint_every``-th candidate and once at the end; pass it back as ``resume_state`` to
    continue exactly there (see the module docstring). An exception from ``evaluate`` or
    ``checkpoint`` propagates unchanged; the last checkpoint stays valid.
    """
    t = np.asarray(times)
    if t.ndim not in (2, 3) or t.shape[0] < 1:
        raise PruneflowError(
            f"the sensitivity search needs times [layers, levels] (or [layers, levels, levels] "
            f"for chain times) with at least one prunable layer, got shape {t.shape}"
        )
    n_layers, n_levels = t.shape[0], t.shape[-1]
    prior = error_prior(n_levels)  # rejects |S| < 2
    k = _positive_int("k", k)
    max_no_improvement = _positive_int("max_no_improvement", max_no_improvement)
    checkpoint_every = _positive_int("checkpoint_every", checkpoint_every)
    if isinstance(delta, bool) or not (isinstance(delta, numbers.Real) and 0.0 <= delta <= 1.0):
        raise PruneflowError(f"delta must be a number in [0, 1], got {delta!r}")
    if local_rule not in ("no_improvement", "fixed_k"):
        raise PruneflowError(
            f"local_rule must be 'no_improvement' or 'fixed_k', got {local_rule!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise PruneflowError(f"seed must be a non-negative integer, got {seed!r}")

    # validates times and budget, raises if infeasible
    solver = DPSolver(t, budget) if t.ndim == 2 else ChainDPSolver(t, budget)
    d_start = max(1, round(delta * n_layers))
    rows = np.arange(n_layers)
    config = {
        "n_layers": n_layers,
        "n_levels": n_levels,
        "budget": solver.budget,
        "times_hash": _times_hash(t),
        "k": k,
        "delta": float(delta),
        "max_no_improvement": max_no_improvement,
        "local_rule": local_rule,
        "seed": int(seed),
    }

    rng = np.random.Generator(np.random.PCG64(int(seed)))
    if resume_state is None:
        state = SearchState(config=config, rng_state=rng.bit_generator.state)
    else:
        if isinstance(resume_state, SearchState):
            state = resume_state.snapshot()
        else:
            state = SearchState.from_dict(resume_state)
        _check_config(state.config, config)
        if state.rng_state.get("bit_generator") != "PCG64":
            raise PruneflowError(
                f"search resume state has generator {state.rng_state.get('bit_generator')!r}; "
                f"expected 'PCG64'"
            )
        try:
            rng.bit_generator.state = state.rng_state
        except (TypeError, ValueError, KeyError) as exc:
            raise PruneflowError(f"search resume state has a bad generator state: {exc}") from exc

    def save() -> None:
        if checkpoint is not None:
            state.rng_state = rng.bit_generator.state
            checkpoint(state.snapshot())

    with _progress(progress) as bar:
        task = bar.add_task(
            "SPDY search",
            total=None,
            completed=state.candidates,
            scored=len(state.memo),
            best="-" if state.best_loss is None else f"{state.best_loss:.5g}",
        )
        while state.phase != "done":
            # Draw order per candidate is part of the format: resume replays it exactly.
            if state.phase == "random":
                c = rng.random(n_layers)
            else:
                assert state.best_c is not None
                c = np.array(state.best_c, dtype=np.float64)
                idx = rng.integers(0, n_layers, size=state.d)
                vals = rng.random(state.d)
                # A loop, not fancy assignment: with repeated indices the last draw must win,
                # which numpy does not promise for advanced assignment.
                for j, v in zip(idx.tolist(), vals.tolist(), strict=True):
                    c[j] = v

            levels = solver.solve(c[:, None] * prior[None, :]).levels
            state.dp_calls += 1
            profile = _profile(levels)
            new_profile = profile not in state.memo
            if new_profile:
                loss = _check_loss(evaluate(profile), profile)
                state.memo[profile] = loss
            else:
                loss = state.memo[profile]

            improved = state.best_loss is None or loss < state.best_loss
            if improved:
                state.best_c = c.tolist()
                state.best_profile = profile
                state.best_loss = loss
            state.history.append(
                {
                    "eval": state.candidates,
                    "phase": state.phase,
                    "d": state.d,
                    "calib_loss": loss,
                    "pred_time": _bucket_time(t, rows, levels),
                    "best": state.best_loss,
                    "new_profile": new_profile,
                    "improved": improved,
                }
            )
            _advance(state, improved, k, max_no_improvement, local_rule, d_start)
            bar.update(
                task,
                completed=state.candidates,
                scored=len(state.memo),
                best=f"{state.best_loss:.5g}",
                description=f"SPDY search ({state.phase}, d={state.d})",
            )
            if state.phase == "done" or state.candidates % checkpoint_every == 0:
                save()

    assert state.best_c is not None and state.best_profile is not None
    assert state.best_loss is not None
    return SearchResult(
        best_c=np.array(state.best_c, dtype=np.float64),
        best_profile=state.best_profile,
        best_loss=state.best_loss,
        history=[dict(row) for row in state.history],
        dp_calls=state.dp_calls,
        distinct_profiles=len(state.memo),
        evaluations=state.candidates,
    )


def _advance(
    state: SearchState,
    improved: bool,
    k: int,
    max_no_improvement: int,
    local_rule: str,
    d_start: int,
) -> None:
    """Update counters and phase after one candidate, so a saved state is always canonical."""
    state.tries += 1
    if state.phase == "random":
        if state.tries == k:
            state.phase, state.d, state.tries, state.no_improvement = "local", d_start, 0, 0
        return
    state.no_improvement = 0 if improved else state.no_improvement + 1
    if local_rule == "no_improvement":
        finished = state.no_improvement == max_no_improvement
    else:
        finished = state.tries == k
    if finished:
        state.d -= 1
        state.tries = state.no_improvement = 0
        if state.d == 0:
            state.phase = "done"


def _check_config(saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    diffs = [
        f"{key}={saved.get(key)!r} (now {current[key]!r})"
        for key in current
        if saved.get(key) != current[key]
    ]
    if diffs:
        raise PruneflowError(
            "search resume state belongs to a different search: it was made with "
            + ", ".join(diffs)
            + "; start a fresh search or restore the original inputs"
        )
