"""Pipeline steps: one unit of work with declared params, code, inputs and outputs.

A :class:`Step` knows which dotted params keys it reads, which files it reads and which it writes;
the source files it runs are read off its compute function's imports (:meth:`Step.code_files`,
:mod:`pruneflow.steps.code_deps`). From these it computes a *fingerprint*: a hash of the step's
name, the values of its params keys, the content hashes of its input files and of its code,
and for a step that reads ``data.root`` of the data set's files (:mod:`pruneflow.data.manifest`).
Equal fingerprints mean equal outputs (every random choice draws from a generator made from a
seed in params: :mod:`pruneflow.seeding`). Files are trusted by their bytes, read once per run
(:func:`pruneflow.io.verified_hash`), not by their size and mtime.

After computing, the step stores its outputs in a content-addressed *step cache*
(``.pruneflow/stepcache/<step>-<fingerprint>/``, hard links, so no extra disk) with a small record
of output hashes and of how long the step took (``timings``, :mod:`pruneflow.wallclock`: no
output carries a wall-clock figure, so equal fingerprints give byte-identical files). Running
a step whose fingerprint has a record:

* outputs present with the recorded hashes -> nothing to do ("cached");
* outputs missing or edited, but the cache copies intact -> relinked ("restored");
* otherwise -> computed again.

Two runs in one folder (two terminals, a scheduled deployment firing while someone works)
share the step cache and the artifacts: a step holds a lock on its outputs
(``.pruneflow/locks/``, ``flock``) from the cache check to the stored record, so the second
run waits for the step they share and then finds it cached, and no artifact is written by two
runs at once.

The Prefect task wrapper (``tasks/``) and ``pruneflow stage NAME`` (what DVC stages call) both
go through :meth:`Step.run`, so the flow, DVC and a plain CLI call share one cache and one
notion of up to date, and a DVC stage needs no Prefect server. DVC deletes a stage's outputs
before it runs the stage; the step cache is what makes that rerun cheap.

This module imports no Prefect.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pruneflow
from pruneflow import memory_format, wallclock
from pruneflow.config import Params
from pruneflow.data.manifest import manifest_digest
from pruneflow.errors import PruneflowError
from pruneflow.io import (
    atomic_path,
    file_hash,
    read_json,
    remove_stale_temporaries,
    verified_hash,
    write_json,
)
from pruneflow.runtime import device_scope
from pruneflow.statedir import state_dir
from pruneflow.steps import code_deps

CODE_ROOT = Path(pruneflow.__file__).resolve().parent.parent
_FORMAT = 1  # bump to invalidate every cached step after a change to this scheme

Record = dict[str, Any]
Item = dict[str, Any] | None


def _label(item: Item) -> str:
    return "[" + ", ".join(f"{k}={v}" for k, v in item.items()) + "]" if item else ""


def cache_generation() -> str:
    """A random token made once per step cache (``.pruneflow/stepcache/GENERATION``).

    Without it, clearing the step cache (``rm -rf .pruneflow/stepcache``, say, with the
    artifacts) left Prefect's persisted results in place under the same keys: the next run
    returned them as cache hits, and the first step that read a deleted artifact failed.
    """
    path = state_dir() / "stepcache" / "GENERATION"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"GENERATION.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_text(os.urandom(6).hex(), encoding="utf-8")
    try:
        os.link(tmp, path)  # atomic and exclusive: of two first callers, one token wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text(encoding="utf-8").strip()


def data_manifest(params: Params) -> str | None:
    """The hash of the files of ``params``' on-disk data set (None for a built-in one)."""
    try:
        return manifest_digest(params.data.dataset, params.data.root, state_dir())
    except OSError as exc:
        raise PruneflowError(
            f"data.root {params.data.root}: cannot read the data set: {exc}"
        ) from None


_code_digests: dict[Path, tuple[list[int] | None, bytes]] = {}


def code_hash(paths: tuple[str, ...]) -> str:
    """One hash of the files ``paths`` (relative to CODE_ROOT, or absolute): names and bytes.
    A file's digest is remembered per process while its (size, mtime, inode) stay."""
    h = hashlib.blake2b(digest_size=16)
    for rel in sorted(paths):
        path = CODE_ROOT / rel
        stat = _stat_key(path)
        if stat is None:
            raise PruneflowError(f"step code {rel} not found under {CODE_ROOT}")
        known = _code_digests.get(path)
        if known is None or known[0] != stat:
            known = (stat, hashlib.blake2b(path.read_bytes(), digest_size=16).digest())
            _code_digests[path] = known
        h.update(rel.encode() + b"\0" + known[1])
    return h.hexdigest()


# params keys whose value may name code by import path (``package.module:factory``): that
# module's closure joins the code of every step that reads the key
IMPORT_PATH_KEYS = ("model.name", "data.dataset")


def _stat_key(path: Path) -> list[int] | None:
    if not path.is_file():
        return None
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_file)
    else:
        _link_file(src, dst)


def _link_file(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed: a real copy
        shutil.copy2(src, dst)


def say(message: str) -> None:
    """One progress line per step on stderr (stdout stays for tables and results)."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Step:
    """A pipeline step. ``compute(params)`` writes every path of ``outputs(params)`` (atomically)
    and returns a small JSON-serializable summary (metrics, counts).

    A *fan-out* step (``fan_out=True``) is one step applied to many items (a sweep level, a
    layer): ``inputs``, ``outputs`` and ``compute`` then take ``(params, item)``, where
    ``item`` is a small JSON-able dict (``{"layer": "fc1"}``) that is part of the fingerprint,
    so every item is cached, resumed and restored on its own.
    """

    name: str
    reads: tuple[str, ...]
    inputs: Callable[[Params], list[Path]]
    outputs: Callable[[Params], list[Path]]
    compute: Callable[[Params], dict[str, Any]]
    description: str = ""
    # what else the outputs depend on, e.g. the host a timing table was measured on: a table
    # from another machine must never be a cache hit
    environment: Callable[[Params], dict[str, Any]] | None = None
    fan_out: bool = False
    # a fan-out step's items in the order they must run (what `pruneflow stage NAME` runs)
    items: Callable[[Params], list[dict[str, Any]]] | None = None
    # files other than Python source that the step's code reads (a template, a table shipped
    # with the package), relative to CODE_ROOT: the import closure cannot see them
    data_files: tuple[str, ...] = ()

    def code_files(self, params: Params | None = None) -> tuple[str, ...]:
        """The files this step runs, relative to CODE_ROOT (absolute outside it), sorted.

        The project modules that ``compute`` imports, transitively (read from the source, see
        :mod:`pruneflow.steps.code_deps`), plus :attr:`data_files`. With ``params``, a module
        named by import path in a key the step reads (:data:`IMPORT_PATH_KEYS`, a user's model
        ``package.module:factory``) joins with its own closure. The fingerprint hashes exactly
        these files; DVC's ``deps:`` list them. Cheap after the first call in a process (parsed
        files are cached by size, mtime and inode).
        """
        fn = self.compute
        try:
            files = code_deps.closure(fn.__module__, fn.__qualname__, CODE_ROOT)
        except (FileNotFoundError, SyntaxError) as exc:
            raise PruneflowError(f"step '{self.name}': cannot read its code: {exc}") from None
        if params is not None:
            for key in IMPORT_PATH_KEYS:
                if key not in self.reads:
                    continue
                module = code_deps.import_path_module(params.get(key))
                if module is None or code_deps.module_file(module, CODE_ROOT) is None:
                    continue  # a zoo name; an unknown module fails where the step loads it
                files |= code_deps.closure(module, None, CODE_ROOT)
        names = {code_deps.relative_name(f, CODE_ROOT) for f in files} | set(self.data_files)
        return tuple(sorted(names))

    def _call(self, fn: Callable[..., Any], params: Params, item: Item) -> Any:
        if self.fan_out:
            if item is None:
                raise PruneflowError(f"step '{self.name}' runs per item: give it an item")
            return fn(params, item)
        if item is not None:
            raise PruneflowError(f"step '{self.name}' takes no item, got {item}")
        return fn(params)

    def canonical_item(self, params: Params, item: Item) -> Item:
        """``item`` as :attr:`items` spells it: ``--item target=2`` is the item ``target=2.0``
        (equal values, but another fingerprint)."""
        if item is None or self.items is None:
            return item
        if not any(isinstance(v, int | float) and not isinstance(v, bool) for v in item.values()):
            return item  # only numbers have two spellings (and a layer list may build a model)
        return next((known for known in self.items(params) if known == item), item)

    def input_paths(self, params: Params, item: Item = None) -> list[Path]:
        return list(self._call(self.inputs, params, item))

    def output_paths(self, params: Params, item: Item = None) -> list[Path]:
        return list(self._call(self.outputs, params, item))

    def params_subset(self, params: Params) -> dict[str, Any]:
        return {key: params.get(key) for key in self.reads}

    def fingerprint(self, params: Params, item: Item = None) -> str:
        item = self.canonical_item(params, item)
        inputs = self.input_paths(params, item)
        missing = [str(p) for p in inputs if not p.exists()]
        if missing:
            raise PruneflowError(
                f"step '{self.name}' needs {', '.join(missing)}: run the step that makes it first"
            )
        payload = {
            "format": _FORMAT,
            "step": self.name,
            "params": self.params_subset(params),
            "item": item,
            "inputs": {str(p): verified_hash(p) for p in inputs},
            "code": code_hash(self.code_files(params)),
            "outputs": [str(p) for p in self.output_paths(params, item)],
            "environment": self.environment(params) if self.environment else None,
            # a step that reads data.root reads the files under it
            "data_files": data_manifest(params) if "data.root" in self.reads else None,
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.blake2b(blob, digest_size=16).hexdigest()

    def _entry(self, fingerprint: str) -> Path:
        return state_dir() / "stepcache" / f"{self.name}-{fingerprint}"

    def _outputs_match(self, record: Record) -> bool:
        """Every recorded output is there with the content recorded (read once per run: an
        unchanged (size, mtime, inode) does not vouch for the bytes, see verified_hash)."""
        for out in record["outputs"]:
            path = Path(out["path"])
            if not path.exists():
                return False
            if verified_hash(path) != out["hash"]:
                return False
        return True

    def _cached_record(self, fingerprint: str) -> Record | None:
        record_path = self._entry(fingerprint) / "record.json"
        if not record_path.exists():
            return None
        try:
            return read_json(record_path)
        except PruneflowError:
            return None  # a damaged cache entry is a miss, never an error

    def cache_key(self, params: Params, item: Item = None) -> str | None:
        """A key for an orchestrator's result cache, or None when a cached result would lie.

        None when the inputs are missing, or when this fingerprint was computed before but the
        outputs on disk no longer match it (deleted or edited by hand): then the step must run.
        A fingerprint never computed gets its key, so the result of this run is stored under it.
        The key names the step cache's generation (:func:`cache_generation`): with the step
        cache cleared, the orchestrator's stored results no longer vouch for any output.
        """
        try:
            fingerprint = self.fingerprint(params, item)
        except PruneflowError:
            return None
        record = self._cached_record(fingerprint)
        if record is not None and not self._outputs_match(record):
            return None
        return f"{self.name}-{fingerprint}-{cache_generation()}"

    def cached(self, params: Params, item: Item = None) -> Record | None:
        """This fingerprint's stored record, marked ``cached``, when its outputs are on disk as
        recorded (read once per run); else None. Computes nothing and takes no lock (like
        :meth:`cache_key`): an orchestrator asks it before scheduling the step at all."""
        try:
            fingerprint = self.fingerprint(params, item)
        except PruneflowError:
            return None
        record = self._cached_record(fingerprint)
        if record is None or not self._outputs_match(record):
            return None
        return {**record, "status": "cached", "seconds": 0.0}

    def _restore(self, fingerprint: str, record: Record) -> bool:
        entry = self._entry(fingerprint)
        for i, out in enumerate(record["outputs"]):
            cached = entry / str(i)
            if not cached.exists() or file_hash(cached) != out["hash"]:
                return False
        for i, out in enumerate(record["outputs"]):
            with atomic_path(out["path"]) as tmp:
                _link_or_copy(entry / str(i), tmp)
        return True

    def _store(self, fingerprint: str, record: Record) -> None:
        entry = self._entry(fingerprint)
        with atomic_path(entry) as tmp:
            tmp.mkdir()
            for i, out in enumerate(record["outputs"]):
                _link_or_copy(Path(out["path"]), tmp / str(i))
            write_json(tmp / "record.json", record)

    def run_all(self, params: Params, force: bool = False) -> list[Record]:
        """Every item of a fan-out step in order (a plain step: its one run)."""
        if not self.fan_out:
            return [self.run(params, force=force)]
        if self.items is None:
            raise PruneflowError(f"step '{self.name}' does not list its items")
        return [self.run(params, force=force, item=item) for item in self.items(params)]

    @contextlib.contextmanager
    def _outputs_lock(self, params: Params, item: Item, label: str) -> Iterator[None]:
        """Hold this step's outputs against every other run and thread in this folder.

        Keyed by the output paths, not the fingerprint: two runs with other params write the
        same files. ``flock`` on a file of its own per step and outputs: threads of one process
        exclude each other too (each opens the file anew), and a killed holder's lock goes with
        its process. The holder's pid is in the file, for the waiter's one line.
        """
        outputs = sorted(os.path.abspath(p) for p in self.output_paths(params, item))
        key = hashlib.blake2b("\0".join(outputs).encode(), digest_size=12).hexdigest()
        path = state_dir() / "locks" / f"{self.name}-{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                who = f"process {holder}" if holder else "another run"
                say(f"  ~ {label}: waiting for {who}, which is computing it in this folder")
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def run(self, params: Params, force: bool = False, item: Item = None) -> Record:
        """Bring this step's outputs up to date; returns the step's record (with ``status``)."""
        item = self.canonical_item(params, item)
        fingerprint = self.fingerprint(params, item)
        label = f"{self.name}{_label(item)}"
        with self._outputs_lock(params, item, label):
            return self._run_locked(params, force, item, fingerprint, label)

    def _run_locked(
        self, params: Params, force: bool, item: Item, fingerprint: str, label: str
    ) -> Record:
        started = time.perf_counter()
        record = None if force else self._cached_record(fingerprint)
        if record is not None and self._outputs_match(record):
            say(f"  = {label}: up to date")
            return {**record, "status": "cached", "seconds": time.perf_counter() - started}
        if record is not None and self._restore(fingerprint, record):
            say(f"  = {label}: restored from the step cache")
            return {**record, "status": "restored", "seconds": time.perf_counter() - started}
        say(f"  > {label}: running")
        for path in self.output_paths(params, item):
            remove_stale_temporaries(path)
        # the step's conv work runs under one oneDNN setting whatever other threads run
        with (
            device_scope(params.runtime.device),
            memory_format.default_scope(),
            wallclock.collecting() as timings,
        ):
            summary = self._call(self.compute, params, item)
        outputs = []
        for path in self.output_paths(params, item):
            if not path.exists():
                raise PruneflowError(f"step '{self.name}' did not write its output {path}")
            outputs.append(
                {"path": str(path), "hash": verified_hash(path), "stat": _stat_key(path)}
            )
        seconds = time.perf_counter() - started
        record = {
            "step": self.name,
            "item": item,
            "fingerprint": fingerprint,
            "params": self.params_subset(params),
            "outputs": outputs,
            "summary": summary,
            # how long it took is no output (see pruneflow.wallclock): the record keeps it
            "timings": {"step": round(seconds, 3), **timings},
        }
        self._store(fingerprint, record)
        say(f"  + {label}: done in {seconds:.1f} s")
        return {**record, "status": "computed", "seconds": seconds}
