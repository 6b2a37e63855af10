"""A flow that crashed at its third task resumes there: the first two are cache hits (found in
the step cache before Prefect schedules them)."""

import time
from pathlib import Path

import pytest
from prefect import flow
from toy_steps import count, make_step

from pruneflow.config import Params
from tasks.common import as_task, run_task


def test_crashed_flow_resumes_at_the_failed_task(prefect_api, workdir):
    flag = Path("crash-third")
    flag.touch()
    s1, a = make_step("first", ("noise.rate",), None)
    s2, b = make_step("second", ("train.epochs",), a)
    s3, _ = make_step("third", ("model.name",), b, fail_flag=flag)
    t1, t2, t3 = as_task(s1), as_task(s2), as_task(s3)

    @flow(name="three-steps")
    def three(params: dict) -> list[dict]:
        r1 = run_task(t1, params)
        r2 = run_task(t2, params, [r1])
        return [r1, r2, run_task(t3, params, [r2])]

    params = Params().model_dump(mode="json")
    with pytest.raises(RuntimeError, match="third crashed"):
        three(params)
    assert (count("first"), count("second"), count("third")) == (1, 1, 1)

    flag.unlink()
    records = three(params)
    assert (count("first"), count("second"), count("third")) == (1, 1, 2)
    assert [r["status"] for r in records] == ["cached", "cached", "computed"]

    # a third run: all three are cache hits, none of the steps' code runs, and none is even
    # scheduled as a Prefect task run (the flow run's log records them)
    state = three(params, return_state=True)
    assert [r["status"] for r in state.result()] == ["cached"] * 3
    assert (count("first"), count("second"), count("third")) == (1, 1, 2)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        only_this = FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        assert client.read_task_runs(flow_run_filter=only_this) == []
    with get_client(sync_client=True) as client:
        for _ in range(50):  # the log worker sends in batches
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            if sum("not scheduled" in log.message for log in logs) == 3:
                break
            time.sleep(0.2)
        assert sum("not scheduled" in log.message for log in logs) == 3


def test_crash_inside_a_fan_out_reruns_only_the_unfinished_items(prefect_api, workdir):
    from toy_steps import make_fanout_step

    from tasks.common import map_items

    flag = Path("crash-item")
    flag.write_text("3")
    sweep = as_task(make_fanout_step("sweep", fail_flag=flag))

    @flow(name="fan-out")
    def fan_out(params: dict) -> list[dict]:
        return map_items(sweep, params, [{"i": i} for i in range(5)])

    params = Params().model_dump(mode="json")
    with pytest.raises(RuntimeError, match="item 3 crashed"):
        fan_out(params)
    assert [count(f"sweep-{i}") for i in range(5)] == [1, 1, 1, 1, 1]
    flag.unlink()
    records = fan_out(params)
    assert [count(f"sweep-{i}") for i in range(5)] == [1, 1, 1, 2, 1]
    assert [r["status"] for r in records] == ["cached"] * 3 + ["computed", "cached"]


def test_the_same_flow_in_another_project_folder_is_not_a_cache_hit(
    prefect_api, workdir, monkeypatch
):
    step, out = make_step("lonely", ("noise.rate",), None)
    lonely = as_task(step)

    @flow(name="one-step")
    def one(params: dict) -> list[dict]:
        return [run_task(lonely, params)]

    params = Params().model_dump(mode="json")
    assert [r["status"] for r in one(params)] == ["computed"]
    # a second project: same step, same params, its own folder and state dir
    other = workdir / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    monkeypatch.setenv("PRUNEFLOW_STATE_DIR", str(other / ".pruneflow"))
    assert [r["status"] for r in one(params)] == ["computed"]
    assert (other / out).exists() and count("lonely") == 1  # counters are per folder
