"""What the flows publish in the Prefect UI: the SPDY tables as table artifacts, the report as
a Markdown artifact, progress artifacts for training loops, timing rows and fan-outs; and the
Prefect-free progress hook of the core."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from prefect import flow
from tiny_params import SPDY
from torch import nn

from pruneflow import config, layout
from pruneflow.config import Params
from pruneflow.data import ImageData
from pruneflow.runtime import progress_listener, report_progress
from pruneflow.steps import STEPS
from pruneflow.steps.report import REPORT
from pruneflow.train import train
from tasks.artifacts import MARKDOWN, TABLES, artifact_key, slug, table_rows

MODEL = "lenet300100"


def _artifacts(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def test_published_files_are_outputs_of_their_steps_with_valid_keys():
    params = Params()
    scopes = {"spdy": "spdy:mlp1024", "sdd": "sdd:lenet300100", "chex": "chex:resnet_mini"}
    for step, names in {**TABLES, **MARKDOWN}.items():
        p = config.scoped(params, scopes.get(step.partition("_")[0]))
        outputs = {path.name: path for path in STEPS[step].output_paths(p)}
        for name in names:
            key = artifact_key(outputs[name], layout.artifacts(p))
            assert key == slug(key) and key, (step, key)
    assert artifact_key("artifacts/chex/mnist5k-resnet_mini/comparison.parquet", "artifacts") == (
        "chex-mnist5k-resnet-mini-comparison"
    )


def test_training_reports_every_epoch_to_the_listener_and_nothing_without_one():
    rng = np.random.default_rng(0)
    raw = torch.from_numpy(rng.integers(0, 256, size=(32, 1, 4, 4), dtype=np.uint8))
    data = ImageData("toy", 2, (1, 4, 4), rng.integers(0, 2, 32), None, raw=raw)
    cfg = Params().train.model_copy(update={"epochs": 3, "batch_size": 16})
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    heard = []
    with progress_listener(lambda *args: heard.append(args)):
        train(model, data, np.arange(32), data.targets, cfg, description="tiny")
    assert heard == [("tiny", 1, 3), ("tiny", 2, 3), ("tiny", 3, 3)]
    report_progress("unheard", 1, 1)  # outside the listener's block: a no-op
    assert len(heard) == 3


def test_spdy_flow_publishes_tables_and_progress_and_the_report_its_markdown(prefect_api, workdir):
    from flows.spdy import spdy
    from tasks.common import as_task, run_task

    params = Params.model_validate(
        {"runtime": {"threads": 1, "progress": "off"}, "spdy": SPDY}
    ).model_dump(mode="json")
    state = spdy(params, return_state=True)
    records = state.result()
    by_key = {a.key: a for a in _artifacts(state.state_details.flow_run_id) if a.key}
    p = config.scoped(config.from_dict(params), f"spdy:{MODEL}")
    for table in ("oneshot", "results"):
        artifact = by_key[f"spdy-{MODEL}-{table}"]
        assert artifact.type == "table"
        shown = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
        frame = pd.read_parquet(layout.spdy_dir(p) / f"{table}.parquet")
        assert shown == table_rows(layout.spdy_dir(p) / f"{table}.parquet")
        assert len(shown) == len(frame) and shown[0]["model"] == MODEL
    # one per fan-out: layers of the database, search targets, gradual-pruning runs
    for step in ("recondb_layer", "spdy_search", "spdy_gmp"):
        artifact = by_key[f"progress-{slug(step)}-spdy-{MODEL}"]
        assert artifact.type == "progress" and float(artifact.data) == 100.0, step
    # inside steps: dense training's epochs, the timing table's rows, each gmp run's training
    inner = [
        a for a in _artifacts(state.state_details.flow_run_id) if a.type == "progress" and not a.key
    ]
    described = " ".join(a.description for a in inner)
    assert f"train_dense spdy:{MODEL}" in described and f"profile spdy:{MODEL}" in described
    assert inner and all(float(a.data) == 100.0 for a in inner)
    assert all(r["status"] == "computed" for r in records)

    report_task = as_task(REPORT)

    @flow(name="report-only")
    def report_flow(params: dict) -> dict:
        return run_task(report_task, params)

    state = report_flow(params, return_state=True)
    (markdown,) = [a for a in _artifacts(state.state_details.flow_run_id) if a.type == "markdown"]
    assert markdown.key == "reports-report"
    assert markdown.data == (layout.reports_dir(p) / "report.md").read_text()
    assert "results" in markdown.data.lower()
