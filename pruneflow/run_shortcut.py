"""A run with nothing to do, recognised without loading the pipeline.

Loading the pipeline (torch, pandas, scipy, Prefect and every step module) costs several
seconds of CPU before the first fingerprint; when nothing changed since the last complete run
of a flow, every step would be a cache hit anyway. After a complete run, ``pruneflow run``
writes ``.pruneflow/runs/shortcut-<flow>.json``: what that run's result depended on, and its
records. The next run of the flow replays those records (every step ``cached``) only if all of
it still holds:

* the request: flow, folder, the params file's and ``params.yaml``'s bytes, the overrides;
* the code: the bytes and names of every file of the ``pruneflow`` package and of ``flows/``
  and ``tasks/`` (a superset of every step's import closure, so an edit anywhere in the
  project, a new module included, takes the full path, where fingerprints follow imports);
* the environment: CPU model, architecture, core count, the Python build and the installed
  distributions (the names of site-packages' entries carry their versions), what the steps'
  ``environment`` (the host a timing was measured on) is made of;
* the step cache's generation (cleared cache: full path);
* the files: every input and output of every step, read and hashed by content once here,
  the outputs against the hashes their steps recorded (an output deleted or edited by hand,
  or an input file changed: full path).

Runs whose steps read anything else are never recorded: a model or data set named by import
path (user code outside the project) or an on-disk data set under ``data.root`` (a data
manifest). Anything that does not match is the ordinary run, which recomputes every
fingerprint; this module only ever says "the last run's answer still holds". It imports no
torch, pandas or Prefect.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pruneflow.statedir import state_dir

FORMAT = 1
_CHUNK = 1 << 20
BASE_PARAMS = "params.yaml"
PROJECT_DIRS = ("flows", "tasks")
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")

Record = dict[str, Any]


@dataclass(frozen=True)
class Facts:
    """What a run of ``flow`` depends on besides its files, taken when the run starts."""

    flow: str
    request: str
    code: str
    environment: dict[str, Any]


def _blake(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _bytes_or_none(path: Path) -> str | None:
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)  # hashlib lets go of the GIL here: threads hash side by side
    except OSError:  # absent, a folder, unreadable: the ordinary run says what is wrong
        return None
    return h.hexdigest()


def file_digest(path: Path) -> str | None:
    """:func:`pruneflow.io.file_hash` (a test holds them equal) without importing pruneflow.io
    and its torch; None when the file is absent."""
    if path.is_dir():
        h = hashlib.blake2b(digest_size=16)
        for sub in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(sub.relative_to(path).as_posix().encode())
            h.update((file_digest(sub) or "").encode())
        return h.hexdigest()
    return _bytes_or_none(path)


def _code_files(code_root: Path) -> list[tuple[str, Path]]:
    package = Path(__file__).resolve().parent
    found = [
        (f"pruneflow/{p.relative_to(package).as_posix()}", p)
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    for folder in PROJECT_DIRS:
        base = code_root / folder
        found += [
            (f"{folder}/{p.relative_to(base).as_posix()}", p)
            for p in base.rglob("*.py")
            if "__pycache__" not in p.parts
        ]
    return sorted(found)


def code_digest(code_root: Path) -> str:
    """The names and bytes of every project source file (package, flows/, tasks/)."""
    h = hashlib.blake2b(digest_size=16)
    for name, path in _code_files(code_root):
        h.update(name.encode() + b"\0" + (_bytes_or_none(path) or "-").encode())
    return h.hexdigest()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment() -> dict[str, Any]:
    """The host and the software the steps run on (see the module docstring)."""
    site = Path(sysconfig.get_paths()["purelib"])
    try:
        installed = sorted(os.listdir(site))
    except OSError:
        installed = []
    return {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "python": sys.version,
        "executable": sys.executable,
        "installed": _blake("\n".join(installed).encode()),
    }


def facts(flow: str, params_file: Path, overrides: Sequence[str], code_root: Path) -> Facts:
    """What ``pruneflow run FLOW --params FILE --set ...`` depends on besides files."""
    base = None if params_file.name == BASE_PARAMS else _bytes_or_none(Path(BASE_PARAMS))
    request = {
        "flow": flow,
        "cwd": os.getcwd(),
        "params_file": str(params_file),
        "params": _bytes_or_none(params_file),
        "base": base,
        "overrides": list(overrides),
    }
    return Facts(
        flow=flow,
        request=_blake(json.dumps(request, sort_keys=True).encode()),
        code=code_digest(code_root),
        environment=environment(),
    )


def _generation() -> str | None:
    try:
        return (state_dir() / "stepcache" / "GENERATION").read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _path(flow: str) -> Path:
    return state_dir() / "runs" / f"shortcut-{flow}.json"


def _reads_outside(records: Iterable[Record], on_disk_sets: Iterable[str]) -> bool:
    """True when a step read user code by import path or an on-disk data set."""
    disk = set(on_disk_sets)
    for r in records:
        params = r.get("params") or {}
        for value in params.values():
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, str) and _IMPORT_PATH.match(v) for v in values):
                return True
        if "data.root" in params and params.get("data.dataset") in disk:
            return True
    return False


def _files_of(records: Iterable[Record]) -> list[str]:
    paths: set[str] = set()
    for r in records:
        paths.update(out["path"] for out in r.get("outputs", []))
        paths.update(r.get("input_files", []))
    return sorted(paths)


def remember(
    run: Facts,
    records: list[Record],
    summary_text: str,
    on_disk_sets: Iterable[str],
) -> Path | None:
    """After a complete run: write what its result depended on (None, and any earlier record
    removed, when the run read something this module cannot check)."""
    path = _path(run.flow)
    with contextlib.suppress(OSError):  # whatever happens below, no older record outlives it
        path.unlink(missing_ok=True)
    if _reads_outside(records, on_disk_sets) or any("input_files" not in r for r in records):
        return None
    files = {p: file_digest(Path(p)) for p in _files_of(records)}
    recorded = {out["path"]: out.get("hash") for r in records for out in r.get("outputs", [])}
    # an output changed since its step recorded it (edited by hand during the run) or gone
    if any(d is None or recorded.get(p, d) != d for p, d in files.items()):
        return None
    payload = {
        "format": FORMAT,
        "request": run.request,
        "code": run.code,
        "environment": run.environment,
        "generation": _generation(),
        "files": files,
        "records": [{k: v for k, v in r.items() if k != "status"} for r in records],
        "summary_text": summary_text,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(payload, default=str), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a full disk or a read-only state dir: the next run is the full one
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return None
    return path


def replay(run: Facts) -> tuple[list[Record], str] | None:
    """The last complete run's records, all ``cached``, and its summary text, when everything
    it depended on still holds; None otherwise (then run the flow)."""
    try:
        saved = json.loads(_path(run.flow).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        return None
    if (
        saved.get("request") != run.request
        or saved.get("code") != run.code
        or saved.get("environment") != run.environment
        or saved.get("generation") is None
        or saved.get("generation") != _generation()
    ):
        return None
    files = saved.get("files") or {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        digests = pool.map(lambda name: file_digest(Path(name)), files)
        if any(got != files[name] for name, got in zip(files, digests, strict=True)):
            return None
    records = [{**r, "status": "cached", "seconds": 0.0} for r in saved.get("records", [])]
    if not records:
        return None
    return records, str(saved.get("summary_text", ""))
