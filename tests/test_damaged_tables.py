"""A damaged table is one clear error, never a silently changed value nor a traceback: a
flipped exponent bit in a timing table, undecodable metadata."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pruneflow.errors import PruneflowError
from pruneflow.io import parquet_metadata, read_parquet, write_parquet
from pruneflow.timing.table import FORMAT, host_description, read_timing_table, write_timing_table


def _table(times: list[float]) -> tuple[pd.DataFrame, dict]:
    rows = [
        {
            "layer": "fc1",
            "layer_index": 0,
            "op": "linear",
            "level": level,
            "sparsity": 0.5 * level,
            "backend": "dense",
            "device": "cpu",
            "threads": 1,
            "batch_size": 64,
            "time_ms": t,
            "time_ms_p10": 0.9 * t,
            "time_ms_p90": 1.1 * t,
            "repeats": 5,
        }
        for level, t in enumerate(times)
    ]
    meta = {
        "format": FORMAT,
        "model": "lenet300100",
        "layers": ["fc1"],
        "all_layers": ["fc1"],
        "skipped_layers": [],
        "levels": [0.0, 0.5],
        "batch_size": 64,
        "threads": 1,
        "device": "cpu",
        "host": host_description(1),
        "dense_total_ms": 2.0,
        "prunable_dense_ms": 1.5,
        "remainder_ms": 0.5,
    }
    return pd.DataFrame(rows), meta


def test_a_timing_table_with_an_implausible_time_is_refused(tmp_path):
    frame, meta = _table([1.5, 0.9])
    good = write_timing_table(tmp_path / "good.parquet", frame, meta)
    assert len(read_timing_table(good, "lenet300100", ["fc1"])[0]) == 2
    for damaged in (2.7e-308, 3.0e12):  # what one flipped exponent bit makes of 0.9 ms
        frame.loc[1, "time_ms"] = damaged
        path = write_parquet(tmp_path / "damaged.parquet", frame, meta)  # past the writer
        with pytest.raises(PruneflowError, match="not a plausible time"):
            read_timing_table(path, "lenet300100", ["fc1"])


def test_undecodable_parquet_metadata_is_one_clear_error(tmp_path):
    table = pa.table({"a": [1, 2]}).replace_schema_metadata({b"pruneflow": b"\xff\xfe{"})
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(PruneflowError, match="corrupt metadata"):
        parquet_metadata(tmp_path / "t.parquet")
    pandas_meta = pa.table({"a": [1, 2]}).replace_schema_metadata({b"pandas": b"\xff\xfe{"})
    pq.write_table(pandas_meta, tmp_path / "p.parquet")
    with pytest.raises(PruneflowError, match="corrupt or truncated"):
        read_parquet(tmp_path / "p.parquet")
