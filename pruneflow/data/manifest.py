"""What an on-disk data set is made of: every file it reads (path, size, content hash).

``prepare`` and every step that loads images read ``data.root``; their fingerprints cover the
string, and through this manifest the files under it: adding, removing or replacing an image
re-runs them (labels.parquet of 32 images kept serving a folder of 50 before). Built-in sets
(digits, mnist5k) ship with their packages and have no files here.

Content hashes are remembered per data set in one file under the pipeline's state dir, keyed
by each file's (size, mtime, inode) as :class:`pruneflow.io.HashCache` keys large files: a
warm run stats the files instead of reading them.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from pruneflow.io import file_hash, write_json

# the folders of data.root that each on-disk set reads (torchvision's names, see datasets.py)
FOLDERS: dict[str, tuple[str, ...]] = {
    "mnist": ("MNIST/raw",),
    "fashion_mnist": ("FashionMNIST/raw",),
    "cifar10": ("cifar-10-batches-py",),
    "cifar100": ("cifar-100-python",),
    "imagefolder": ("train", "val"),
}

_lock = threading.Lock()


def dataset_files(name: str, root: str | os.PathLike[str]) -> list[Path]:
    """The files data set ``name`` reads under ``root``, sorted (none for built-in sets)."""
    files: list[Path] = []
    for folder in FOLDERS.get(name, ()):
        base = Path(root) / folder
        if base.is_dir():
            files += [p for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sorted(files)


def manifest(name: str, root: str | os.PathLike[str], state: Path) -> list[dict[str, object]]:
    """``[{path, size, hash}]`` of :func:`dataset_files`, paths relative to ``root``."""
    root = Path(root)
    files = dataset_files(name, root)
    key = hashlib.blake2b(f"{name}:{root.resolve()}".encode(), digest_size=12).hexdigest()
    memo_path = state / "hashes" / f"dataset-{key}.json"
    with _lock:
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        entries, fresh = [], {}
        for path in files:
            rel = path.relative_to(root).as_posix()
            st = path.stat()
            stat = [st.st_size, st.st_mtime_ns, st.st_ino]
            known = memo.get(rel)
            digest = known[1] if known and known[0] == stat else file_hash(path)
            fresh[rel] = [stat, digest]
            entries.append({"path": rel, "size": st.st_size, "hash": digest})
        if fresh != memo:
            try:
                memo_path.parent.mkdir(parents=True, exist_ok=True)
                write_json(memo_path, fresh)
            except OSError:
                pass  # an unwritable memo only costs a re-read next time
    return entries


def manifest_digest(name: str, root: str | os.PathLike[str], state: Path) -> str | None:
    """One hash of :func:`manifest` (None for a built-in set: nothing on disk)."""
    if name not in FOLDERS:
        return None
    blob = json.dumps(manifest(name, root, state), sort_keys=True).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()
