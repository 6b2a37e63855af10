"""An output edited without a trace (same size, mtime put back, as ``cp -p`` or bit rot leave
it) is not "up to date": the step that wrote it sees that its bytes changed, and so does the
step that reads it. Each file is read once per run for this, not once per read."""

from __future__ import annotations

import os
from pathlib import Path

from test_steps import _chain
from toy_steps import count

import pruneflow.io as io
from pruneflow.config import Params


def _edit_in_place_keeping_size_and_mtime(path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    with open(path, "r+b") as fh:  # the same inode: the step cache's hard link sees it too
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_an_output_edited_without_a_trace_is_recomputed_before_a_reader_uses_it(workdir):
    first, second, a, b = _chain()
    p = Params()
    first.run(p), second.run(p)
    original = a.read_text()
    _edit_in_place_keeping_size_and_mtime(a)
    assert first.run(p)["status"] == "computed" and a.read_text() == original
    assert second.run(p)["status"] == "cached"  # it reads the recomputed, original file
    assert (count("first"), count("second")) == (2, 1)


def test_a_file_is_read_once_per_run_however_often_it_is_trusted(tmp_path, monkeypatch):
    path = tmp_path / "table.bin"
    path.write_bytes(b"x" * 100)
    reads = []
    real = io.file_hash
    monkeypatch.setattr(io, "file_hash", lambda f, cache=None: reads.append(f) or real(f))
    digest = io.verified_hash(path)
    assert io.verified_hash(path) == digest and len(reads) == 1
    path.write_bytes(b"y" * 100)  # rewritten: read again
    assert io.verified_hash(path) != digest and len(reads) == 2


def test_an_item_spelt_with_an_int_is_the_listed_float_item(workdir):
    from pruneflow.io import atomic_path
    from pruneflow.steps import Step

    def write(p, item):
        with atomic_path(f"out-{item['target']:g}.txt") as tmp:
            tmp.write_text(str(item))
        return {}

    step = Step(
        "targets",
        (),
        lambda p, item: [],
        lambda p, item: [Path(f"out-{item['target']:g}.txt")],
        write,
        fan_out=True,
        items=lambda p: [{"target": 2.0}],
    )
    assert step.run(Params(), item={"target": 2.0})["status"] == "computed"
    assert step.run(Params(), item={"target": 2})["status"] == "cached"  # `--item target=2`


def test_restoring_an_output_that_is_still_there_leaves_no_temporary(workdir):
    """A restore relinks every output, also one still linked to its cache copy (a partial
    restore: another output was missing): renaming a link over a link to the same inode does
    nothing, and its temporary was left beside the output, where DVC counts it."""
    first, _, a, _ = _chain()
    p = Params()
    first.run(p)
    fingerprint = first.fingerprint(p)
    assert first._restore(fingerprint, first._cached_record(fingerprint))
    assert sorted(q.name for q in a.parent.iterdir()) == [a.name]
