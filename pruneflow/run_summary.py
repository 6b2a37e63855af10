"""What ``pruneflow run`` prints and records when a flow ends.

One row per (step, model): how many of its runs (fan-out items) were computed, restored from
the step cache or found cached, and the seconds this run spent computing them. The same rows
go to ``.pruneflow/runs/last.json`` (with every record's status and timings,
:mod:`pruneflow.wallclock`), so tests and benchmarks read what ran from a file instead of
parsing the terminal.
"""

from __future__ import annotations

# nothing of the pipeline (no torch, no Prefect) is imported here: a run with nothing to do
# prints its summary without loading it (pruneflow.run_shortcut)
import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pruneflow.statedir import state_dir

Record = dict[str, Any]
STATUSES = ("computed", "restored", "cached")


def own_seconds(record: Record) -> float:
    """Seconds this run spent on the record's step: a Prefect cache hit carries the seconds of
    the run that computed it, which this run did not spend."""
    return 0.0 if record.get("status") == "cached" else float(record.get("seconds", 0.0))


def step_rows(records: list[Record]) -> list[dict[str, Any]]:
    """Per (step, model), in order of first appearance: runs per status and seconds spent."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        model = (r.get("params") or {}).get("model.name", "")
        row = rows.setdefault(
            (r["step"], model),
            {
                "step": r["step"],
                "model": model,
                "runs": 0,
                **dict.fromkeys(STATUSES, 0),
                "seconds": 0.0,
            },
        )
        row["runs"] += 1
        status = r.get("status", "computed")
        row[status if status in STATUSES else "computed"] += 1
        row["seconds"] += own_seconds(r)
    return list(rows.values())


def run_log(flow: str, records: list[Record], wall: float) -> dict[str, Any]:
    return {
        "flow": flow,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": wall,
        "steps": step_rows(records),
        "records": [
            {
                "step": r["step"],
                "model": (r.get("params") or {}).get("model.name", ""),
                "item": r.get("item"),
                "status": r.get("status", "computed"),
                "seconds": own_seconds(r),
                # the computing run's parts (pruneflow.wallclock), also on a cache hit
                "timings": r.get("timings", {}),
                "fingerprint": r.get("fingerprint"),
            }
            for r in records
        ],
    }


def _plain(obj: Any) -> Any:
    return obj.item() if hasattr(obj, "item") else str(obj)  # numpy / torch scalars


def _write_atomically(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = json.dumps(data, indent=2, sort_keys=True, default=_plain)
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def write_run_log(flow: str, records: list[Record], wall: float) -> Path:
    """``.pruneflow/runs/last.json`` (and a timestamped copy): what the last run did."""
    log = run_log(flow, records, wall)
    folder = state_dir() / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomically(folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{flow}.json", log)
    last = folder / "last.json"
    _write_atomically(last, log)
    return last


def print_steps(console: Console, records: list[Record], wall: float) -> None:
    rows = step_rows(records)
    computed = sum(r["computed"] + r["restored"] for r in rows)
    title = f"pruneflow run: {wall:.1f} s, {len(records)} step runs"
    if computed == 0:
        title += ": all cached, nothing to do"
    table = Table(title=title)
    for col in ("step", "model", "runs", *STATUSES, "seconds"):
        table.add_column(col, justify="left" if col in ("step", "model") else "right")
    for r in rows:
        table.add_row(
            r["step"],
            r["model"],
            str(r["runs"]),
            *(str(r[s]) if r[s] else "" for s in STATUSES),
            f"{r['seconds']:.1f}",
        )
    console.print(table)
