"""Two runs in one folder: the second waits for the step they share, then finds it cached;
nothing is computed twice and every artifact reads back whole."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from conftest import pruneflow_exe, run_cli
from toy_steps import bump, count

from pruneflow import layout
from pruneflow.checkpoint import load_checkpoint
from pruneflow.config import Params
from pruneflow.io import atomic_path, read_parquet
from pruneflow.steps import Step


def _slow_step(started: threading.Event) -> Step:
    out = Path("artifacts") / "slow.txt"

    def compute(p: Params) -> dict:
        started.set()
        bump("slow")
        time.sleep(0.5)  # long enough for the other thread to reach the lock
        with atomic_path(out) as tmp:
            tmp.write_text("slow")
        return {}

    return Step("slow", (), lambda p: [], lambda p: [out], compute)


def test_two_threads_running_one_step_compute_it_once(workdir):
    started = threading.Event()
    step = _slow_step(started)
    statuses: list[str] = []
    first = threading.Thread(target=lambda: statuses.append(step.run(Params())["status"]))
    first.start()
    assert started.wait(30)
    statuses.append(step.run(Params())["status"])  # waits for the first, then finds it cached
    first.join()
    assert sorted(statuses) == ["cached", "computed"] and count("slow") == 1
    assert Path("artifacts/slow.txt").read_text() == "slow"


TRAIN = [
    "--set",
    "train.epochs=20",
    "--set",
    "runtime.threads=1",
    "--set",
    "runtime.progress=off",
]


def test_two_processes_in_one_folder_compute_each_step_once(workdir):
    assert run_cli("stage", "prepare", cwd=workdir).returncode == 0
    both = [
        subprocess.Popen(
            [pruneflow_exe(), "stage", "train_dense", *TRAIN],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(proc.wait(timeout=300), proc.communicate()[1]) for proc in both]
    assert [rc for rc, _ in results] == [0, 0], results
    logs = "".join(err for _, err in results)
    assert logs.count("train_dense: running") == 1, logs
    assert logs.count("train_dense: up to date") == 1, logs
    p = Params.model_validate({"train": {"epochs": 20}})
    model, meta = load_checkpoint(layout.dense_checkpoint(p))
    assert meta and sum(p.numel() for p in model.parameters()) > 0
    metrics = json.loads(layout.metrics_file(p, "train_dense").read_text())
    assert 0.0 <= metrics["test_acc"] <= 1.0
    assert len(read_parquet(layout.labels_table(p))) > 0
    third = run_cli("stage", "train_dense", *TRAIN, cwd=workdir)
    assert third.returncode == 0 and "train_dense: up to date" in third.stderr
