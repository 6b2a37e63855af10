import pandas as pd
import pytest
import torch

from pruneflow.errors import PruneflowError
from pruneflow.io import (
    atomic_path,
    file_hash,
    load_tensors,
    parquet_metadata,
    read_parquet,
    save_tensors,
    write_parquet,
)


def test_failed_write_leaves_old_file_and_no_temporaries(tmp_path):
    target = tmp_path / "table.parquet"
    write_parquet(target, pd.DataFrame({"a": [1, 2]}))
    before = file_hash(target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("killed mid-write")
    assert file_hash(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet"]


def test_atomic_directory_replace(tmp_path):
    target = tmp_path / "db"
    for content in (b"one", b"two"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "x").write_bytes(content)
    assert (target / "x").read_bytes() == b"two"


def test_parquet_schema_and_metadata(tmp_path):
    path = write_parquet(
        tmp_path / "t.parquet", pd.DataFrame({"a": [1], "b": ["x"]}), {"k": [1, 2]}
    )
    assert parquet_metadata(path) == {"k": [1, 2]}
    assert read_parquet(path, {"a": "iu", "b": "O"}).shape == (1, 2)
    with pytest.raises(PruneflowError, match="no column 'c'"):
        read_parquet(path, {"c": "f"})
    with pytest.raises(PruneflowError, match="dtype"):
        read_parquet(path, {"a": "f"})
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(PruneflowError, match="corrupt or truncated Parquet"):
        read_parquet(path)
    with pytest.raises(PruneflowError, match="missing Parquet"):
        read_parquet(tmp_path / "nope.parquet")


def test_tensors_round_trip_and_truncation(tmp_path):
    path = save_tensors(tmp_path / "w.safetensors", {"w": torch.arange(6.0).view(2, 3).t()})
    assert torch.equal(load_tensors(path)["w"], torch.arange(6.0).view(2, 3).t())
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(PruneflowError, match="corrupt or truncated safetensors"):
        load_tensors(path)


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PruneflowError, match="cannot"):
        write_parquet(blocker / "sub" / "t.parquet", pd.DataFrame({"a": [1]}))


def test_hash_cache_skips_rereading_an_unchanged_large_file_and_sees_any_rewrite(tmp_path):
    import json as _json
    import os as _os

    from pruneflow.io import HashCache, file_hash

    cache = HashCache(tmp_path / "hashes")
    big = tmp_path / "db.safetensors"
    big.write_bytes(b"a" * (HashCache.MIN_BYTES + 10))
    digest = file_hash(big, cache)
    assert digest == file_hash(big)
    (entry,) = (tmp_path / "hashes").glob("*.json")
    # an unchanged file is answered from the entry, without reading it
    stored = _json.loads(entry.read_text())
    entry.write_text(_json.dumps({**stored, "hash": "remembered"}))
    assert file_hash(big, cache) == "remembered"
    # a rewrite of the same size (new mtime) is hashed again
    stat = big.stat()
    big.write_bytes(b"b" * (HashCache.MIN_BYTES + 10))
    _os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_hash(big, cache) == file_hash(big) != digest
    # small files never touch the cache
    small = tmp_path / "labels.parquet"
    small.write_bytes(b"x")
    file_hash(small, cache)
    assert len(list((tmp_path / "hashes").glob("*.json"))) == 1


def _raise(code: int, message: str):
    def fail(*args, **kwargs):
        raise OSError(code, message)

    return fail


def test_a_full_or_read_only_file_system_is_one_error_naming_the_file(tmp_path, monkeypatch):
    import errno
    import tempfile

    from pruneflow.io import atomic_path, write_json

    target = tmp_path / "results.json"
    write_json(target, {"kept": True})
    # the disk fills while the new version is written: the old file stays whole
    with pytest.raises(PruneflowError, match=r"cannot write .*results.json: No space left"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            _raise(errno.ENOSPC, "No space left on device")()
    assert "kept" in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    # a read-only folder: not even a temporary can be made
    monkeypatch.setattr(tempfile, "mkstemp", _raise(errno.EROFS, "Read-only file system"))
    with pytest.raises(PruneflowError, match=r"cannot write .*other.json: Read-only file"):
        write_json(tmp_path / "other.json", {})


def test_a_folder_output_survives_a_failed_swap(tmp_path, monkeypatch):
    import errno
    import os

    from pruneflow.io import atomic_path

    folder = tmp_path / "layers"
    folder.mkdir()
    (folder / "fc1.safetensors").write_text("old")
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # moving the new folder into place fails (disk full)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(PruneflowError, match="cannot write .*layers"):
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "fc1.safetensors").write_text("new")
    monkeypatch.setattr(os, "replace", real)
    assert (folder / "fc1.safetensors").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layers"]


def test_safetensors_files_are_byte_identical_across_processes(tmp_path):
    """safetensors orders metadata by a per-process hash; save_tensors sorts it. One file is
    written in this process, the other in a second one (each seeds its hash at random)."""
    import subprocess
    import sys

    files = [tmp_path / f"{i}.safetensors" for i in range(2)]
    metadata = {f"level{i}": str(i) * i for i in range(12)}
    save_tensors(files[0], {"w": torch.arange(6.0), "b": torch.ones(2)}, metadata)
    code = (
        "import sys, torch; from pruneflow.io import save_tensors; "
        "save_tensors(sys.argv[1], {'w': torch.arange(6.0), 'b': torch.ones(2)}, "
        "{f'level{i}': str(i) * i for i in range(12)})"
    )
    subprocess.run([sys.executable, "-c", code, str(files[1])], check=True)
    assert files[0].read_bytes() == files[1].read_bytes()
    tensors = load_tensors(files[0])
    assert tensors["w"].tolist() == [0, 1, 2, 3, 4, 5]
