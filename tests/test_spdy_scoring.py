import torch
from torch import nn

from pruneflow.models import prunable_layers
from pruneflow.recon import ReconstructionDB, build_database
from pruneflow.spdy.scoring import CalibrationLoss

GRID = [0.0, 0.5, 0.8]


def _setup(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    ).eval()
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    layers = prunable_layers(model)
    build_database(model, [x], tmp_path / "db", GRID, layers=layers, progress=False)
    db = ReconstructionDB.open(tmp_path / "db", model=model, grid=GRID)
    return model, db, layers, [(x[:32], y[:32]), (x[32:], y[32:])]


def test_dense_profile_scores_the_dense_model_and_only_changes_are_stitched(tmp_path):
    model, db, layers, batches = _setup(tmp_path)
    with torch.no_grad():
        dense = sum(nn.functional.cross_entropy(model(x), y).item() for x, y in batches) / 2
    score = CalibrationLoss(model, db, layers, batches)
    assert abs(score([0] * len(layers)) - dense) < 1e-5
    sparse = score([2] * len(layers))
    assert sparse != dense
    copies = score.swapped_layers
    assert score([2] * len(layers)) == sparse and score.swapped_layers == copies
    score([2] * (len(layers) - 1) + [1])
    assert score.swapped_layers == copies + 1


def test_train_mode_bn_leaves_running_statistics_alone(tmp_path):
    model, db, layers, batches = _setup(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    score = CalibrationLoss(model, db, layers, batches, bn="train")
    first = score([1] * len(layers))
    score([2] * len(layers))
    assert score([1] * len(layers)) == first
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training
