"""data.dataset = package.module:factory: the user's train and test sets, split and recorded
as the built-in sets are; factories returning the wrong things are one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pruneflow import config, layout
from pruneflow.data import load_dataset
from pruneflow.errors import PruneflowError
from pruneflow.steps import STEPS
from pruneflow.steps.data import read_labels

FACTORY = "tests.user_models.data"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def importable(workdir, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    return workdir


def test_a_factory_data_set_is_split_and_recorded(importable):
    name = f"{FACTORY}:digits"
    p = config.from_dict({"data": {"dataset": name}, "noise": {"rate": 0.0}})
    STEPS["prepare"].run(p)
    assert layout.labels_table(p) == Path(
        "artifacts/data/tests.user_models.data-digits/symmetric-0.0/labels.parquet"
    )
    frame, meta = read_labels(p)
    assert meta["dataset"] == name and meta["num_classes"] == 10 and meta["in_shape"] == [1, 8, 8]
    # the factory's test set is the test split; val is carved from its train set, seeded
    assert (frame["split"].to_numpy()[500:] == "test").all()
    assert (frame["split"].to_numpy()[:500] == "val").sum() == 50
    data = load_dataset(name)
    images = data.images(np.array([0, 599]))
    assert images.shape == (2, 1, 8, 8) and torch.equal(images[1], data.lazy[599][0])
    assert STEPS["prepare"].run(p)["status"] == "cached"


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("float_labels", "train item 0 has label 0.0 (float); expected an int class index"),
        ("lists", "the train set is a list, not a torch Dataset"),
        ("too_few_classes", "outside 0..4 (num_classes = 5)"),
        ("missing", "has no attribute 'missing'"),
    ],
)
def test_bad_factories_are_one_line_errors_before_anything_is_written(importable, factory, message):
    p = config.from_dict({"data": {"dataset": f"{FACTORY}:{factory}"}})
    with pytest.raises(PruneflowError, match=re.escape(message)) as err:
        STEPS["prepare"].run(p)
    assert "\n" not in str(err.value) and f"{FACTORY}:{factory}" in str(err.value)
    assert not Path("artifacts").exists()


def test_a_dataset_name_that_is_neither_built_in_nor_a_path_is_refused():
    with pytest.raises(PruneflowError, match="unknown data set 'imagenet'"):
        config.from_dict({"spdy": {"dataset": "imagenet"}})
