"""File I/O every step shares: atomic writes, content hashes, checked Parquet and safetensors.

Nothing is ever written under its final name until it is complete: writers produce a temporary
sibling and ``os.replace`` it into place, so a crash, a full disk or a kill leaves either the old
file or the new one, never half of one. Readers turn a missing, truncated or malformed file into
a :class:`PruneflowError` that names the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pruneflow.errors import PruneflowError

_HASH_CHUNK = 1 << 20


def remove_stale_temporaries(final: str | os.PathLike[str]) -> list[Path]:
    """Delete what a killed writer of ``final`` left beside it (:func:`atomic_path`'s hidden
    ``.<name>.*.tmp``); returns what was removed.

    A process killed with SIGKILL never reaches atomic_path's cleanup. Its temporaries are
    never read under a final name, but inside a folder DVC tracks as one output they would
    change the folder's hash, so the step that owns ``final`` sweeps them before writing.
    """
    final = Path(final)
    removed = []
    for stale in final.parent.glob(f".{final.name}.*.tmp") if final.parent.is_dir() else []:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def _replace_folder(new: Path, final: Path) -> None:
    """Swap a finished folder in for the old one; on failure the old one is put back.

    (A folder cannot be replaced in one rename: the old one moves aside under a temporary name
    :func:`remove_stale_temporaries` recognises, should the process die in between.)
    """
    aside = final.with_name(f".{final.name}.{os.getpid()}-old.tmp")
    os.replace(final, aside)
    try:
        os.replace(new, final)
    except BaseException:
        os.replace(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success move it into place atomically.

    Works for files and directories. On any exception the temporary is removed and ``final``
    is left as it was.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PruneflowError(f"cannot create folder {final.parent}: {exc.strerror}") from exc
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:  # a read-only or full file system
        raise PruneflowError(f"cannot write {final}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the writer creates it, as a file or a directory
    try:
        yield tmp
        if not tmp.exists():
            raise PruneflowError(f"writer produced nothing for {final}")
        if final.is_dir() and not final.is_symlink():
            _replace_folder(tmp, final)
        else:
            os.replace(tmp, final)
            # rename(2) between two links to one inode (a restore relinking the file already
            # there) does nothing and leaves the temporary: it is the same file, drop it
            if tmp.exists() or tmp.is_symlink():
                tmp.unlink()
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, PruneflowError):
            raise PruneflowError(f"cannot write {final}: {exc.strerror or exc}") from exc
        raise


class HashCache:
    """Content hashes of large files remembered by (size, mtime, inode), on disk under
    ``folder`` so later processes find them: a warm pipeline run fingerprints its steps
    without re-reading gigabytes of databases and checkpoints. A file rewritten in any way
    gets a new mtime (and usually size or inode), so it is hashed again (the rule git's index
    and DVC's state database use). Small files are hashed directly: reading them costs less.
    """

    MIN_BYTES = 1 << 20

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)

    def _entry(self, path: Path) -> Path:
        name = hashlib.blake2b(str(path.resolve()).encode(), digest_size=16).hexdigest()
        return self.folder / f"{name}.json"

    def get(self, path: Path, stat: os.stat_result) -> str | None:
        try:
            entry = json.loads(self._entry(path).read_text())
        except (OSError, ValueError):
            return None
        key = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        return entry.get("hash") if entry.get("stat") == key else None

    def put(self, path: Path, stat: os.stat_result, digest: str) -> None:
        entry = {"stat": [stat.st_size, stat.st_mtime_ns, stat.st_ino], "hash": digest}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json(self._entry(path), entry)
        except (OSError, PruneflowError):
            pass  # a cache that cannot be written only costs a re-hash next time


def file_hash(path: str | os.PathLike[str], cache: HashCache | None = None) -> str:
    """Content hash (BLAKE2b, 16 bytes, hex) of a file, or of a directory's files and names.

    With ``cache``, a large file unchanged since it was last hashed is not read again.
    """
    path = Path(path)
    h = hashlib.blake2b(digest_size=16)
    if path.is_dir():
        for sub in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(sub.relative_to(path).as_posix().encode())
            h.update(file_hash(sub, cache).encode())
        return h.hexdigest()
    try:
        stat = path.stat()
    except FileNotFoundError as exc:
        raise PruneflowError(f"missing file {path}") from exc
    cached = cache is not None and stat.st_size >= HashCache.MIN_BYTES
    if cached and (known := cache.get(path, stat)) is not None:
        return known
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                h.update(chunk)
    except FileNotFoundError as exc:
        raise PruneflowError(f"missing file {path}") from exc
    if cached:
        cache.put(path, stat, h.hexdigest())
    return h.hexdigest()


_verified_lock = threading.Lock()
_verified: dict[str, tuple[tuple[int, ...], str]] = {}


def verified_hash(path: str | os.PathLike[str]) -> str:
    """:func:`file_hash` read from the file's bytes once per process, then remembered while its
    (size, mtime, ctime, inode) stay.

    What the pipeline trusts a file by: a step's fingerprint (its inputs) and whether its
    outputs are still what it wrote. A key of (size, mtime, inode) alone, as :class:`HashCache`
    keeps across processes, misses a same-size edit whose mtime was put back (``touch -d``,
    ``cp -p`` over a hard link) and bit rot, and the pipeline went on from the bad value; each
    run reads every file it trusts once instead. ctime, which no user can set, catches an
    edit within the run.
    """
    path = Path(path)
    if path.is_dir():
        h = hashlib.blake2b(digest_size=16)
        for sub in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(sub.relative_to(path).as_posix().encode())
            h.update(verified_hash(sub).encode())
        return h.hexdigest()
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise PruneflowError(f"missing file {path}") from exc
    key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    name = str(path.resolve())
    with _verified_lock:
        known = _verified.get(name)
    if known is not None and known[0] == key:
        return known[1]
    digest = file_hash(path)
    with _verified_lock:
        _verified[name] = (key, digest)
    return digest


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PruneflowError(f"missing file {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PruneflowError(f"corrupt JSON file {path}: {exc}") from exc


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return obj.as_posix()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_parquet(
    path: str | os.PathLike[str],
    frame: pd.DataFrame,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``frame`` atomically; ``metadata`` goes into the file's key-value metadata as JSON."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged[b"pruneflow"] = json.dumps(dict(metadata), sort_keys=True, default=_json_default)
        table = table.replace_schema_metadata(merged)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_parquet(
    path: str | os.PathLike[str], columns: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Read a Parquet table and check it has ``columns`` (name -> pandas dtype kind letters).

    The dtype check uses ``dtype.kind``: e.g. ``"iu"`` for integers, ``"f"`` for floats,
    ``"b"`` for booleans, ``"O"`` for strings.
    """
    path = Path(path)
    if not path.is_file():
        raise PruneflowError(f"missing Parquet file {path}")
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: damaged metadata
        raise PruneflowError(f"corrupt or truncated Parquet file {path}: {exc}") from exc
    for name, kinds in (columns or {}).items():
        if name not in frame.columns:
            raise PruneflowError(
                f"{path} has no column '{name}' (columns: {', '.join(frame.columns)})"
            )
        kind = frame[name].dtype.kind
        if kind not in kinds:
            raise PruneflowError(
                f"{path}: column '{name}' has dtype {frame[name].dtype}, expected kind {kinds!r}"
            )
    return frame


def parquet_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata written by :func:`write_parquet` (empty if there is none)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise PruneflowError(f"corrupt or truncated Parquet file {path}: {exc}") from exc
    raw = meta.get(b"pruneflow")
    try:
        return json.loads(raw) if raw else {}
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: damaged bytes
        raise PruneflowError(f"corrupt metadata in Parquet file {path}: {exc}") from exc


def save_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save tensors as safetensors, atomically (contiguous CPU copies are made as needed)."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(clean, str(tmp), metadata=dict(metadata) if metadata else None)
        except SafetensorError as exc:  # a full disk: the library's error names no file
            raise PruneflowError(f"cannot write {path}: {exc}") from exc
        _sort_metadata(tmp)
    return Path(path)


def _sort_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its metadata keys in sorted order, in place.

    safetensors keeps the metadata in a hash map whose order changes from process to process,
    so the same tensors and metadata gave different bytes on every run (and DVC saw a new file
    each time). The same entries in sorted order take exactly as many bytes, so the header's
    length and every tensor offset stay as they are.
    """
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        raw = f.read(size)
        header = json.loads(raw)
        meta = header.get("__metadata__")
        if not meta or len(meta) < 2:
            return
        header["__metadata__"] = dict(sorted(meta.items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) != len(raw.rstrip(b" ")):
            raise PruneflowError(f"{path}: unexpected safetensors header layout")
        f.seek(8)
        f.write(text.ljust(size, b" "))


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise PruneflowError(f"missing safetensors file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PruneflowError(f"corrupt or truncated safetensors file {path}: {exc}") from exc
