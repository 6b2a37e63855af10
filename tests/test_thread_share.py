"""Fan-out items a flow runs side by side share runtime.threads (tasks.runner.sharing_threads),
and every pruneflow process waits for work passively unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

import tasks.common as common
from pruneflow import config
from tasks.runner import sharing_threads


def _params(threads: int, **orchestration) -> dict:
    tree = config.Params().model_dump(mode="json")
    tree["runtime"]["threads"] = threads
    tree["orchestration"] |= orchestration
    return tree


@pytest.mark.parametrize(
    ("threads", "orchestration", "running", "share"),
    [
        (2, {"runner": "thread", "workers": 2}, 3, 1),  # two at a time on two cores
        (2, {"runner": "thread", "workers": 2}, 1, 2),  # a step alone keeps them all
        (8, {"runner": "thread", "workers": 4}, 3, 2),  # three side by side: 8 // 3
        (1, {"runner": "thread", "workers": 2}, 5, 1),  # never below one
        (4, {"runner": "dask", "dask": {"workers": 2}}, 6, 2),  # a local cluster's processes
        # a remote scheduler's workers run on their own hosts' cores
        (4, {"runner": "dask", "dask": {"workers": 2, "address": "tcp://10.0.0.1:8786"}}, 6, 4),
    ],
)
def test_items_side_by_side_share_the_threads(threads, orchestration, running, share) -> None:
    params = _params(threads, **orchestration)
    out = sharing_threads(params, running)
    assert out["runtime"]["threads"] == share
    assert params["runtime"]["threads"] == threads  # the caller's params are left alone
    assert {k: v for k, v in out.items() if k != "runtime"} == {
        k: v for k, v in params.items() if k != "runtime"
    }


def test_map_items_submits_uncached_items_with_their_share(monkeypatch) -> None:
    # two of three items are not cached: they run side by side on a two-worker thread runner
    params = _params(2, runner="thread", workers=2)
    cached = {"a": None, "b": {"cached": True}, "c": None}
    monkeypatch.setattr(common, "step_cached", lambda task, p, scope, item: cached[item["k"]])
    monkeypatch.setattr(common, "feeding", lambda *args: [])
    monkeypatch.setattr(common, "ProgressArtifact", lambda *a, **kw: SimpleNamespace(report=print))
    monkeypatch.setattr(common, "finish_state", lambda task, state, p, scope, item: state)
    submitted = []

    def submit(p, scope, item, upstream):
        submitted.append((item["k"], p["runtime"]["threads"]))
        return SimpleNamespace(wait=lambda: None, state={"ran": item["k"]})

    task = SimpleNamespace(name="fake", submit=submit)
    records = common.map_items(task, params, [{"k": "a"}, {"k": "b"}, {"k": "c"}])
    assert submitted == [("a", 1), ("c", 1)]
    assert records == [{"ran": "a"}, {"cached": True}, {"ran": "c"}]


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_importing_pruneflow_makes_openmp_wait_passively(given, expected) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = "import pruneflow, os; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == expected, out.stderr
