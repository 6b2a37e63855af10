"""The reconstruction-database steps: one cached task per layer, then the index; the database
they make opens, matches a sequential build, and a crash after some layers resumes there."""

import numpy as np
import pytest
import torch

from pruneflow import layout
from pruneflow.config import Params, scoped
from pruneflow.errors import PruneflowError
from pruneflow.recon import ReconstructionDB, build_database
from pruneflow.steps.data import PREPARE
from pruneflow.steps.dense import TRAIN_DENSE
from pruneflow.steps.recondb import (
    RECONDB,
    RECONDB_LAYER,
    layer_items,
    layer_items_longest_first,
    layer_path,
)
from pruneflow.steps.spdy_inputs import (
    calibration_batches,
    calibration_indices,
    dense_model,
    spdy_layers,
)
from pruneflow.steps.timing import grid_levels

SPDY = {
    "dataset": "digits",
    "models": ["lenet300100"],
    "train": {"epochs": 2, "batch_size": 128},
    "grid": {"min_sparsity": 0.5, "max_sparsity": 0.95, "steps": 5, "skip_first_last": False},
    "recon": {"calib_samples": 300, "batch_size": 64},
}


def _params(**recon) -> Params:
    spdy = {**SPDY, "recon": {**SPDY["recon"], **recon}}
    base = Params.model_validate({"runtime": {"threads": 1, "progress": "off"}, "spdy": spdy})
    return scoped(base, "spdy:lenet300100")


def _dense(p: Params) -> None:
    PREPARE.run(p)
    TRAIN_DENSE.run(p)


def test_the_flow_submits_the_longest_solves_first():
    grid = {**SPDY["grid"], "skip_first_last": True}
    base = Params.model_validate({"spdy": {**SPDY, "models": ["smallcnn"], "grid": grid}})
    p = scoped(base, "spdy:smallcnn")
    first = [i["layer"] for i in layer_items_longest_first(p)]
    assert first == ["fc1", "conv5.0", "conv4.0", "conv3.0", "conv2.0"]
    assert sorted(first) == sorted(i["layer"] for i in layer_items(p))


def test_layers_fan_out_then_index_opens_and_equals_a_sequential_build(workdir):
    p = _params()
    _dense(p)
    items = layer_items(p)
    assert [i["layer"] for i in items] == ["fc1", "fc2", "fc3"]
    records = RECONDB_LAYER.run_all(p)
    assert [r["status"] for r in records] == ["computed"] * 3
    summary = RECONDB.run(p)["summary"]
    assert summary["layers"] == 3 and summary["levels"] == len(grid_levels(p)) == 7
    db = ReconstructionDB.open(layout.recondb_dir(p), model=dense_model(p), grid=grid_levels(p))
    assert db.index["file"].str.startswith("layers/").all()
    assert len(calibration_batches(p)) == 5  # 300 images in batches of 64
    # a search scores on a subset of the database's images, the first of the same seeded order
    scoring = calibration_indices(p, 100)
    assert len(scoring) == 100 and set(scoring) <= set(calibration_indices(p))
    assert np.array_equal(calibration_indices(p, 10_000), calibration_indices(p))

    model = dense_model(p)
    seq = build_database(
        model,
        calibration_batches(p),
        workdir / "seq",
        grid_levels(p),
        layers=spdy_layers(p, model),
        progress=False,
    )
    other = ReconstructionDB.open(seq.path)
    for layer in db.layers:
        for level in range(len(db.grid)):
            assert torch.equal(db.weights(layer, level), other.weights(layer, level)), layer
    cols = ["layer", "level", "sparsity", "nnz", "rel_error", "solver"]
    assert db.index[cols].equals(other.index[cols])

    again = RECONDB_LAYER.run_all(p)
    assert [r["status"] for r in again] == ["cached"] * 3


def test_a_crash_after_some_layers_resumes_at_the_next(workdir, monkeypatch):
    p = _params()
    _dense(p)
    import pruneflow.steps.recondb as mod

    real = mod.solve_layer
    solved: list[str] = []

    def crash_on_fc3(weight, hessian, grid, **kw):
        if kw["name"] == "fc3":
            raise RuntimeError("killed")
        solved.append(kw["name"])
        return real(weight, hessian, grid, **kw)

    monkeypatch.setattr(mod, "solve_layer", crash_on_fc3)
    with pytest.raises(RuntimeError):
        RECONDB_LAYER.run_all(p)
    assert solved == ["fc1", "fc2"] and not layer_path(p, "fc3").exists()
    monkeypatch.setattr(mod, "solve_layer", real)
    statuses = [r["status"] for r in RECONDB_LAYER.run_all(p)]
    assert statuses == ["cached", "cached", "computed"]


def test_bad_input_names_the_problem(workdir):
    p = _params()
    _dense(p)
    with pytest.raises(PruneflowError, match="not a layer SPDY prunes"):
        RECONDB_LAYER.run(p, item={"layer": "conv9"})
    with pytest.raises(PruneflowError, match="needs .*fc2.safetensors"):
        RECONDB.run(p)  # layers not built yet
    RECONDB_LAYER.run_all(p)
    layer_path(p, "fc2").write_bytes(layer_path(p, "fc2").read_bytes()[:100])
    with pytest.raises(PruneflowError, match="fc2.safetensors"):
        RECONDB.run(p)
    assert not (layout.recondb_dir(p) / "index.parquet").exists()


def test_a_recomputed_layer_is_the_same_file_so_the_index_downstream_stays_cached(workdir):
    """The layer files once carried the solve's wall-clock seconds: every recomputed layer was
    a new file, and everything downstream of the database ran again."""
    p = _params()
    _dense(p)
    RECONDB_LAYER.run_all(p)
    assert RECONDB.run(p)["status"] == "computed"
    before = layer_path(p, "fc2").read_bytes()
    forced = RECONDB_LAYER.run(p, force=True, item={"layer": "fc2"})
    assert forced["status"] == "computed"
    assert layer_path(p, "fc2").read_bytes() == before
    assert forced["timings"]["solve"] > 0  # how long it took: in the step record only
    assert RECONDB.run(p)["status"] == "cached"
