import numpy as np
import pytest
import torch

from pruneflow.config import TrainParams
from pruneflow.data import load_dataset
from pruneflow.errors import PruneflowError
from pruneflow.sparsity import masks as M
from pruneflow.sparsity.gmp import GmpSchedule, cubic_sparsity, gradual_prune
from pruneflow.train import evaluate, seeded_build


def test_cubic_schedule_shape():
    assert cubic_sparsity(0, 0.0, 0.9, 10, 110) == 0.0
    assert cubic_sparsity(110, 0.0, 0.9, 10, 110) == 0.9
    mid = cubic_sparsity(60, 0.0, 0.9, 10, 110)
    assert mid == pytest.approx(0.9 - 0.9 * 0.5**3)
    values = [cubic_sparsity(t, 0.05, 0.8, 0, 50) for t in range(51)]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))


def test_gradual_prune_reaches_profile_and_keeps_zeros():
    data = load_dataset("digits")
    idx = np.arange(1200)
    model = seeded_build("lenet300100", 10, data.in_shape, 0)
    cfg = TrainParams(epochs=4, batch_size=64, lr=0.05, momentum=0.9, weight_decay=1e-4)
    targets = {"fc1": 0.9, "fc2": 0.6}
    masks, _ = gradual_prune(
        model, data, idx, data.targets, targets, cfg, GmpSchedule(0, 2, every_steps=5)
    )
    for name, s in targets.items():
        w = dict(model.named_modules())[name].weight
        assert int((w == 0).sum()) >= round(s * w.numel())
        assert int((~masks[name]).sum()) == round(s * w.numel())
        assert torch.all(w[~masks[name]] == 0)
    assert M.sparsity({"fc3": torch.ones(3, dtype=torch.bool)}) == 0.0
    _, acc = evaluate(model, data, np.arange(1200, 1797), data.targets)
    assert acc > 0.8  # pruned to 90%/60% and fine-tuned, it still classifies digits


def test_a_schedule_in_fractional_epochs_prunes_and_stops_on_its_steps():
    data = load_dataset("digits")
    idx = np.arange(1200)  # 19 steps per epoch at batch 64
    model = seeded_build("lenet300100", 10, data.in_shape, 0)
    cfg = TrainParams(epochs=9, batch_size=64, lr=0.05)  # the run's length is `epochs`
    schedule = GmpSchedule(0.25, 0.75, every_steps=2)
    assert schedule.steps(19) == (5, 14)
    masks, history = gradual_prune(
        model, data, idx, data.targets, {"fc1": 0.8}, cfg, schedule, epochs=1.5
    )
    assert len(history.loss) == 2  # one whole epoch, then the half that ran (29 steps in all)
    assert int((~masks["fc1"]).sum()) == round(0.8 * model.fc1.weight.numel())
    assert torch.all(model.fc1.weight[~masks["fc1"]] == 0)
    with pytest.raises(PruneflowError, match=r"past the training length \(0.5 epochs\)"):
        gradual_prune(model, data, idx, data.targets, {"fc1": 0.8}, cfg, schedule, epochs=0.5)


@pytest.mark.parametrize(
    ("schedule", "targets", "match"),
    [
        (GmpSchedule(0, 9, 5), {"fc1": 0.5}, "past the training length"),
        (GmpSchedule(2, 2, 5), {"fc1": 0.5}, "below end_epoch"),
        (GmpSchedule(0, 2, 0), {"fc1": 0.5}, "every_steps"),
        (GmpSchedule(0, 2, 5), {"fc1": 1.0}, "target sparsity of 'fc1'"),
        # 100 images at batch 64: 2 steps per epoch, a window of 4 steps
        (GmpSchedule(0, 2, 4), {"fc1": 0.5}, "below the pruning window of 4"),
    ],
)
def test_bad_schedule_fails_before_training(schedule, targets, match):
    data = load_dataset("digits")
    model = seeded_build("lenet300100", 10, data.in_shape, 0)
    before = model.fc1.weight.clone()
    with pytest.raises(PruneflowError, match=match):
        gradual_prune(
            model, data, np.arange(100), data.targets, targets, TrainParams(epochs=4), schedule
        )
    assert torch.equal(model.fc1.weight, before)
