"""The end-of-run summary: runs per status per step, and only the seconds this run spent."""

import json

from rich.console import Console

from pruneflow.run_summary import print_steps, step_rows, write_run_log


def _record(step, status, seconds, model="smallcnn", item=None):
    return {
        "step": step,
        "item": item,
        "status": status,
        "seconds": seconds,
        "fingerprint": f"{step}-{item}",
        "params": {"model.name": model},
    }


RECORDS = [
    _record("prepare", "cached", 0.3),
    _record("spdy_gmp", "computed", 20.0, item={"run": 0}),
    _record("spdy_gmp", "cached", 19.0, item={"run": 1}),  # seconds of the run that made it
    _record("spdy_gmp", "restored", 0.1, item={"run": 2}),
    _record("prepare", "computed", 1.0, model="lenet300100"),
]


def test_rows_group_by_step_and_model_and_count_only_this_runs_seconds():
    rows = step_rows(RECORDS)
    assert [(r["step"], r["model"]) for r in rows] == [
        ("prepare", "smallcnn"),
        ("spdy_gmp", "smallcnn"),
        ("prepare", "lenet300100"),
    ]
    gmp = rows[1]
    assert (gmp["runs"], gmp["computed"], gmp["cached"], gmp["restored"]) == (3, 1, 1, 1)
    assert abs(gmp["seconds"] - 20.1) < 1e-9
    assert rows[0]["seconds"] == 0.0


def test_run_log_lists_every_record_and_the_console_says_when_all_were_cached(workdir):
    path = write_run_log("all", RECORDS, 12.5)
    log = json.loads(path.read_text())
    assert path.name == "last.json" and log["flow"] == "all" and log["wall_seconds"] == 12.5
    assert [r["status"] for r in log["records"]] == [r["status"] for r in RECORDS]
    assert len(list(path.parent.glob("*-all.json"))) == 1

    console = Console(record=True, width=120)
    print_steps(console, [_record("prepare", "cached", 3.0)], 4.0)
    assert "all cached, nothing to do" in console.export_text()
    console = Console(record=True, width=120)
    print_steps(console, RECORDS, 4.0)
    assert "nothing to do" not in console.export_text()
