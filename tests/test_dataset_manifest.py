"""An on-disk data set's files are in the fingerprint of every step that reads data.root:
images added after ``prepare`` re-run it, and a labels.parquet made from other files is
refused by the steps that read it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.steps.data import PREPARE, read_labels
from pruneflow.steps.dense import TRAIN_DENSE


def _images(root, n: int, start: int = 0) -> None:
    rng = np.random.default_rng(start)
    for cls in ("cat", "dog"):
        (root / "train" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + n):
            pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / cls / f"{i}.png")


def test_images_added_after_prepare_rerun_it_and_stale_labels_are_refused(workdir):
    root = workdir / "images"
    _images(root, 8)
    p = Params.model_validate(
        {"data": {"dataset": "imagefolder", "root": str(root), "image_size": 8}}
    )
    assert PREPARE.run(p)["status"] == "computed"
    assert PREPARE.run(p)["status"] == "cached"
    dense_before = TRAIN_DENSE.fingerprint(p)
    _images(root, 4, start=8)  # 24 images now, 16 labelled
    with pytest.raises(PruneflowError, match="other files than those under data.root"):
        read_labels(p)
    assert TRAIN_DENSE.fingerprint(p) != dense_before  # its images changed too
    record = PREPARE.run(p)
    assert record["status"] == "computed" and record["summary"]["images"] == 24
    frame, _ = read_labels(p)
    assert len(frame) == 24
    assert PREPARE.run(p)["status"] == "cached"
