import shutil
from pathlib import Path

import pytest
from toy_steps import count, make_step

from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.steps.base import state_dir


def _chain():
    first, a = make_step("first", ("noise.rate",), None)
    second, b = make_step("second", ("train.epochs",), a)
    return first, second, a, b


def test_second_run_is_cached_and_params_invalidate_only_readers(workdir):
    first, second, a, b = _chain()
    p = Params()
    assert first.run(p)["status"] == "computed" and second.run(p)["status"] == "computed"
    assert first.run(p)["status"] == "cached" and second.run(p)["status"] == "cached"
    assert (count("first"), count("second")) == (1, 1)
    q = Params.model_validate({"train": {"epochs": 7}})
    first.run(q), second.run(q)
    assert (count("first"), count("second")) == (1, 2)  # only the step reading train.epochs
    r = Params.model_validate({"train": {"epochs": 7}, "noise": {"rate": 0.3}})
    first.run(r), second.run(r)
    assert (count("first"), count("second")) == (2, 3)  # its input file changed


def test_deleted_output_is_restored_edited_output_is_recomputed(workdir):
    first, _, a, _ = _chain()
    p = Params()
    first.run(p)
    original = a.read_text()
    a.unlink()
    assert first.run(p)["status"] == "restored" and a.read_text() == original
    assert count("first") == 1
    replacement = a.with_name("new")
    replacement.write_text("edited by hand")
    replacement.replace(a)  # a new inode (as most editors save): the cached copy is intact
    assert first.run(p)["status"] == "restored" and a.read_text() == original
    with open(a, "a") as fh:  # edited in place through the hard link: the cache copy is damaged too
        fh.write("!")
    assert first.run(p)["status"] == "computed" and a.read_text() == original
    assert count("first") == 2


def test_cache_key_refuses_stale_outputs(workdir):
    first, _, a, _ = _chain()
    p = Params()
    key = first.cache_key(p)
    assert key and key.startswith("first-")
    first.run(p)
    assert first.cache_key(p) == key
    a.write_text("edited")
    assert first.cache_key(p) is None


def test_clearing_the_step_cache_changes_every_key(workdir):
    # an orchestrator's stored results are keyed by cache_key: once the step cache (and with
    # it the only record of what the outputs were) is gone, none of them may be a hit
    first, _, a, _ = _chain()
    p = Params()
    first.run(p)
    key = first.cache_key(p)
    assert first.cache_key(p) == key  # stable while the cache lives
    shutil.rmtree(state_dir() / "stepcache")
    a.unlink()
    assert first.cache_key(p) not in (None, key)
    assert first.run(p)["status"] == "computed"


def test_missing_input_and_missing_output_are_clear_errors(workdir):
    _, second, _, _ = _chain()
    with pytest.raises(PruneflowError, match="run the step that makes it first"):
        second.run(Params())
    lazy, _ = make_step("lazy", (), None)
    broken = lazy.__class__(**{**lazy.__dict__, "compute": lambda p: {}})
    with pytest.raises(PruneflowError, match="did not write its output"):
        broken.run(Params())
    assert not Path("artifacts/lazy.txt").exists()


def test_fan_out_items_are_cached_one_by_one(workdir):
    from toy_steps import make_fanout_step

    step = make_fanout_step("sweep")
    p = Params()
    for i in range(3):
        assert step.run(p, item={"i": i})["status"] == "computed"
    Path("artifacts/sweep/1.txt").unlink()
    statuses = [step.run(p, item={"i": i})["status"] for i in range(3)]
    assert statuses == ["cached", "restored", "cached"]
    assert [count(f"sweep-{i}") for i in range(3)] == [1, 1, 1]
    with pytest.raises(PruneflowError, match="runs per item"):
        step.run(p)
