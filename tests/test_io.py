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
