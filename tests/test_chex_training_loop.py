"""CHEX trains through pruneflow.train.train: its random shifts and per-iteration hook, and
that neither changes what the loop does when unused."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from pruneflow.config import TrainParams
from pruneflow.data import load_dataset
from pruneflow.train import random_shift, seeded_build, train

CFG = TrainParams(epochs=2, batch_size=64, lr=0.05, seed=3)


def _run(**kw):
    torch.set_num_threads(1)
    data = load_dataset("digits")
    model = seeded_build("smallcnn", 10, data.in_shape, 0)
    history = train(model, data, np.arange(300), data.targets, CFG, **kw)
    return model, history


def _same(a, b) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def test_every_image_moves_by_its_own_offset_with_edges_replicated():
    x = torch.arange(2 * 5 * 5, dtype=torch.float32).reshape(1, 2, 5, 5).repeat(64, 1, 1, 1)
    assert random_shift(x, 0) is x
    out = random_shift(x, 1, torch.Generator().manual_seed(0))
    padded = F.pad(x[:1], (1, 1, 1, 1), mode="replicate")[0]
    crops = [padded[:, dy : dy + 5, dx : dx + 5] for dy in range(3) for dx in range(3)]
    hits = [next(i for i, c in enumerate(crops) if torch.equal(img, c)) for img in out]
    assert len(set(hits)) == 9  # 64 images: every offset of the 3 x 3 window occurs
    again = random_shift(x, 1, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_the_hook_sees_every_iteration_and_the_optimizer():
    seen = []
    _run(on_step=lambda it, opt: seen.append((it, isinstance(opt, torch.optim.SGD))))
    per_epoch = math.ceil(300 / CFG.batch_size)
    assert seen == [(i, True) for i in range(1, CFG.epochs * per_epoch + 1)]


def test_unused_shift_and_hook_leave_training_unchanged_and_shifts_are_deterministic():
    plain, hist = _run()
    hooked, hist_hooked = _run(shift=0, on_step=lambda it, opt: None)
    assert _same(plain, hooked) and hist.loss == hist_hooked.loss
    shifted, hist_a = _run(shift=2)
    again, hist_b = _run(shift=2)
    assert _same(shifted, again) and hist_a.loss == hist_b.loss
    assert not _same(plain, shifted)  # the augmentation is applied
