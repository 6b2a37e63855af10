"""The double-descent flow on Prefect: chains side by side on a bounded task runner, a chain
that fails stops alone, and a rerun resumes it where it stopped."""

import threading

import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from test_sdd_sweep import _params

import pruneflow.steps.sdd as sdd_steps
from pruneflow import config
from pruneflow.steps.sdd import level_file


def test_two_workers_run_two_chains_side_by_side_and_a_failed_chain_resumes(
    prefect_api, workdir, monkeypatch
):
    from flows.double_descent import double_descent

    flow = double_descent.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    # two chains: finetune, and rewind with reinit beside it (reinit takes rewind's masks)
    params = _params(final_sparsity=0.8, modes=["finetune", "rewind", "reinit"])  # levels 1-3
    real = sdd_steps.retrain
    # both chains' first levels must be training at the same time, or this times out: with
    # whole chains queued up front, two workers would hold one chain's levels 1 and 2
    both_first_levels = threading.Barrier(2, timeout=60)

    def retrain(*args, description="", **kw):
        if description.endswith(("finetune seed 0 level 1", "rewind seed 0 level 1")):
            both_first_levels.wait()
        if description.endswith("rewind seed 0 level 2"):
            raise RuntimeError("worker lost at rewind level 2")
        return real(*args, description=description, **kw)

    monkeypatch.setattr(sdd_steps, "retrain", retrain)
    with pytest.raises(RuntimeError, match="rewind level 2"):
        flow(params.model_dump(mode="json"))
    view = config.scoped(params, "sdd:lenet300100")
    chain = {"method": "magnitude", "seed": 0}
    assert level_file(view, {**chain, "mode": "rewind", "level": 1}).exists()
    assert level_file(view, {**chain, "mode": "reinit", "level": 1}).exists()
    assert not level_file(view, {**chain, "mode": "rewind", "level": 2}).exists()
    assert not level_file(view, {**chain, "mode": "reinit", "level": 2}).exists()
    # the other chain ran to its end
    assert all(
        level_file(view, {**chain, "mode": "finetune", "level": lvl}).exists() for lvl in (1, 2, 3)
    )

    monkeypatch.setattr(sdd_steps, "retrain", real)
    records = flow(params.model_dump(mode="json"))
    levels = [
        (r["item"]["mode"], r["item"]["level"], r["status"])
        for r in records
        if r["step"] == "sdd_level"
    ]
    assert levels == [
        ("finetune", 1, "cached"),
        ("finetune", 2, "cached"),
        ("finetune", 3, "cached"),
        ("rewind", 1, "cached"),
        ("reinit", 1, "cached"),
        ("rewind", 2, "computed"),
        ("reinit", 2, "computed"),
        ("rewind", 3, "computed"),
        ("reinit", 3, "computed"),
    ]
    assert {r["step"] for r in records} >= {"sdd_sweep", "sdd_plots"}
