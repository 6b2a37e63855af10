"""What the flows show in the Prefect UI: the key tables as table artifacts, the report as a
Markdown artifact, and progress artifacts for long steps and fan-outs.

Everything here is a view of files the steps already wrote: it is published after a step has
run (computed, restored or found up to date by the step cache), never read back by a step, and
a failure to publish is logged, not raised, so the UI can never fail a pipeline.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from pruneflow import layout
from pruneflow.config import Params
from pruneflow.runtime import progress_listener
from pruneflow.steps import Record

logger = logging.getLogger("pruneflow.artifacts")

# step -> the file names among its outputs shown as tables (Parquet or JSON)
TABLES: dict[str, tuple[str, ...]] = {
    "spdy_oneshot": ("oneshot.parquet",),
    "spdy_results": ("results.parquet",),
    "sdd_sweep": ("sweep.parquet", "lottery.parquet"),
    "chex_extract": ("metrics.json",),
    "chex_report": ("comparison.parquet",),
}
# step -> the Markdown files among its outputs shown as they are
MARKDOWN: dict[str, tuple[str, ...]] = {"report": ("report.md",)}
# a long loop's progress artifact is updated at most this often (each update is an API call)
UPDATE_EVERY_S = 2.0


def slug(text: str) -> str:
    """A valid Prefect artifact key: only lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def artifact_key(path: str | Path, root: str | Path) -> str:
    """``artifacts/spdy/smallcnn/oneshot.parquet`` -> ``spdy-smallcnn-oneshot``: the file's
    place under the artifacts folder names it uniquely across methods and models."""
    path = Path(path)
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    return slug(str(rel.with_suffix("")))


def table_rows(path: Path) -> list[dict[str, Any]]:
    """A Parquet table or a (nested) JSON object as rows of plain JSON values."""
    if path.suffix == ".parquet":
        # through JSON: numpy scalars become numbers, NaN becomes null
        return json.loads(pd.read_parquet(path).to_json(orient="records", double_precision=6))
    data = json.loads(path.read_text())
    return [{"key": k, "value": v} for k, v in pd.json_normalize(data, sep=".").iloc[0].items()]


def _outputs_named(record: Record, names: tuple[str, ...]) -> list[Path]:
    return [Path(o["path"]) for o in record["outputs"] if Path(o["path"]).name in names]


def publish_step(step: str, record: Record, params: Params, scope: str | None) -> list[str]:
    """Publish the tables and Markdown that ``step``'s record names; returns their keys."""
    root = layout.artifacts(params)
    where = f"`{step}`" + (f" ({scope})" if scope else "")
    keys = []
    try:
        for path in _outputs_named(record, TABLES.get(step, ())):
            key = artifact_key(path, root)
            create_table_artifact(
                table_rows(path), key=key, description=f"{where}: {path}", _sync=True
            )
            keys.append(key)
        for path in _outputs_named(record, MARKDOWN.get(step, ())):
            key = artifact_key(path, root)
            create_markdown_artifact(
                path.read_text(), key=key, description=f"{where}: {path}", _sync=True
            )
            keys.append(key)
    except Exception as exc:  # the UI is a view: never fail the step for it
        logger.warning("could not publish the artifacts of %s: %s", step, exc)
    return keys


class ProgressArtifact:
    """A Prefect progress artifact for one loop or fan-out, created on its first report.

    Lazily: a step found in the cache reports nothing and creates nothing. Updates are
    throttled to one per :data:`UPDATE_EVERY_S`, except the one that reaches 100 %.
    """

    def __init__(self, description: str, key: str | None = None) -> None:
        self.description = description
        self.key = key
        self.artifact_id: UUID | None = None
        self.started = time.monotonic()
        self.last = self.started

    def report(self, done: int, total: int, description: str | None = None) -> None:
        now = time.monotonic()
        finished = done >= total
        if not finished and now - self.last < UPDATE_EVERY_S:
            return
        self.last = now
        percent = 100.0 * min(done, total) / total
        text = f"{description or self.description}: {done}/{total}"
        try:
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(
                    percent, key=self.key, description=text, _sync=True
                )
            else:
                update_progress_artifact(self.artifact_id, percent, description=text, _sync=True)
        except Exception as exc:  # the UI is a view: never fail the loop for it
            logger.warning("could not update the progress of %s: %s", text, exc)


@contextmanager
def step_progress(label: str) -> Iterator[None]:
    """While a step computes, its long loops (training epochs, timing rows) update a progress
    artifact of the running task; a new loop in the same step starts its own bar."""
    bars: dict[str, ProgressArtifact] = {}

    def listen(description: str, done: int, total: int) -> None:
        if description not in bars or done == 1:
            bars[description] = ProgressArtifact(f"{label}: {description}")
        bars[description].report(done, total)

    with progress_listener(listen):
        yield
