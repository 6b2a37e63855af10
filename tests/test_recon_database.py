"""The database on disk: build, open, stitch, and every way it can be the wrong one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.io import read_parquet
from pruneflow.recon import INDEX_COLUMNS, ReconstructionDB, build_database, capture_hessians
from pruneflow.recon import rel_error as measure
from pruneflow.recon.baselines import magnitude_prune

GRID = [0.0, 0.25, 0.5, 0.75, 0.9, 0.97]
LAYERS = ["0", "3", "6", "8"]


def _model(seed: int = 0, width: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, width, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(width * 9, 12),
        nn.ReLU(),
        nn.Linear(12, 4),
    )
    with torch.no_grad():  # non-trivial BN statistics, so stitching must leave them alone
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def _batches(seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 2, 8, 8, generator=gen)
    return [base + 0.7 * torch.randn(24, 2, 8, 8, generator=gen) for _ in range(3)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    model = _model()
    root = tmp_path_factory.mktemp("recon") / "db"
    result = build_database(model, _batches(), root, GRID, model_name="tiny", progress=False)
    assert [r["layer"] for r in result.layers] == LAYERS
    return root, model


def test_index_and_quality_against_magnitude(built: tuple[Path, nn.Module]) -> None:
    root, model = built
    index = read_parquet(root / "index.parquet", INDEX_COLUMNS)
    assert len(index) == len(LAYERS) * len(GRID)
    assert set(index["solver"]) == {"dense", "exact"}
    db = ReconstructionDB.open(root, model=model, grid=GRID, model_name="tiny")
    hessians = capture_hessians(model, LAYERS, _batches(), progress=False)
    modules = dict(model.named_modules())
    gains = []
    for row in index.itertuples():
        stored = db.weights(row.layer, row.level)
        weight = modules[row.layer].weight
        assert row.file == f"{row.layer}.safetensors" and row.key == f"level_{row.level:03d}"
        assert row.nnz == int(torch.count_nonzero(stored))
        assert row.rel_error == pytest.approx(
            measure(weight, stored, hessians[row.layer]), rel=1e-5, abs=1e-12
        )
        if row.level:
            mag = measure(weight, magnitude_prune(weight, row.sparsity), hessians[row.layer])
            assert row.rel_error <= mag + 1e-12, (row.layer, row.level)
            gains.append(mag - row.rel_error)
    assert sum(gains) / len(gains) > 0


def test_stitch_reads_back_bit_for_bit_and_swaps_only_changed_layers(
    built: tuple[Path, nn.Module],
) -> None:
    root, dense = built
    db = ReconstructionDB.open(root)
    model = _model()
    untouched = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("weight")}
    profile = {"0": 2, "3": 5, "6": 1, "8": 0}
    assert db.stitch(model, profile) is model
    for layer, level in profile.items():
        assert torch.equal(dict(model.named_modules())[layer].weight, db.weights(layer, level))
    for key, value in model.state_dict().items():
        if key in untouched:
            assert torch.equal(value, untouched[key]), key
    stitcher = db.stitcher(model)
    assert stitcher.levels == profile
    assert stitcher.apply({**profile, "3": 1, "8": 4}) == ["3", "8"]
    assert stitcher.apply({**profile, "3": 1, "8": 4}) == []
    with torch.no_grad():  # a weight changed in place since: copied again
        model[0].weight.mul_(2)
    assert stitcher.apply({"0": 2, "3": 1}) == ["0"]
    assert torch.equal(model[0].weight, db.weights("0", 2))
    db.stitch(model, {"0": 0, "3": 0, "6": 0, "8": 0})  # level 0 restores the dense weights
    for layer in LAYERS:
        assert torch.equal(
            dict(model.named_modules())[layer].weight, dict(dense.named_modules())[layer].weight
        )


def test_wrong_model_grid_profile_or_missing_index(built: tuple[Path, nn.Module]) -> None:
    root, _ = built
    with pytest.raises(PruneflowError, match=r"3\.safetensors: layer '3' stores weights of shape"):
        ReconstructionDB.open(root, model=_model(width=5))
    with pytest.raises(PruneflowError, match="different sparsity grid"):
        ReconstructionDB.open(root, grid=GRID[:-1])
    with pytest.raises(PruneflowError, match="built for model 'tiny', not 'lenet'"):
        ReconstructionDB.open(root, model_name="lenet")
    db = ReconstructionDB.open(root)
    with pytest.raises(PruneflowError, match="stores weights of shape"):
        db.stitch(_model(width=5), {"3": 1})
    with pytest.raises(PruneflowError, match="layer 'fc1' is not in the database"):
        db.stitch(_model(), {"fc1": 1})
    with pytest.raises(PruneflowError, match="level 6 is not in the database's grid"):
        db.stitch(_model(), {"0": 6})
    with pytest.raises(PruneflowError, match="no index.parquet"):
        ReconstructionDB.open(root.parent)


def _copy(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "db"
    shutil.copytree(root, target)
    return target


def test_truncated_or_corrupt_files_are_named(
    built: tuple[Path, nn.Module], tmp_path: Path
) -> None:
    root = _copy(built[0], tmp_path)
    path = root / "6.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-50])
    with pytest.raises(PruneflowError, match=r"layer '6': corrupt or truncated file .*6\.safet"):
        ReconstructionDB.open(root)
    path.write_bytes(b"\xff" * 8 + data[8:])
    with pytest.raises(PruneflowError, match=r"layer '6': corrupt or truncated"):
        ReconstructionDB.open(root)
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF  # inside the tensor data: only the content hash can tell
    path.write_bytes(bytes(flipped))
    ReconstructionDB.open(root)
    with pytest.raises(PruneflowError, match=r"layer '6': .*6\.safetensors has changed"):
        ReconstructionDB.open(root, verify=True)
    path.unlink()
    with pytest.raises(PruneflowError, match=r"layer '6': missing file"):
        ReconstructionDB.open(root)


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    model = _model()
    bad = _batches()
    bad[1][0, 0, 0, 0] = float("nan")
    with pytest.raises(PruneflowError, match=r"layer '0' has NaN/Inf.*building .*0\.safetensors"):
        build_database(model, bad, tmp_path / "db", GRID, progress=False)
    assert list(tmp_path.iterdir()) == []
