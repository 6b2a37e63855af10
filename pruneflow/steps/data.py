"""Step ``prepare``: fix the split, add label noise to the training split, write labels.parquet.

``labels.parquet`` schema (one row per image, in the data set's index order):
  index int64, split str (train|val|test), true_label int64, label int64, is_noisy bool.
Its file metadata records the data set, class count, input shape, the split and noise params,
and the per-split counts. Validation and test labels are always clean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pruneflow import layout
from pruneflow.config import Params
from pruneflow.data import ImageData, load_dataset, make_noisy_labels, make_splits
from pruneflow.errors import PruneflowError
from pruneflow.io import parquet_metadata, read_parquet, write_parquet
from pruneflow.models.sources import user_code
from pruneflow.steps.base import Step, data_manifest

LABEL_COLUMNS = {"index": "iu", "split": "O", "true_label": "iu", "label": "iu", "is_noisy": "b"}


def load_data(p: Params) -> ImageData:
    return load_dataset(p.data.dataset, p.data.root, p.data.image_size)


def build_labels(p: Params, data: ImageData) -> pd.DataFrame:
    split = make_splits(
        data.targets,
        data.official_test,
        p.data.val_fraction,
        p.data.test_fraction,
        p.data.split_seed,
    )
    train = np.flatnonzero(split == "train")
    labels = data.targets.copy()
    labels[train] = make_noisy_labels(
        data.targets[train], data.num_classes, p.noise.rate, p.noise.kind, p.noise.seed
    )
    return pd.DataFrame(
        {
            "index": np.arange(len(data), dtype=np.int64),
            "split": split.astype(str),
            "true_label": data.targets,
            "label": labels,
            "is_noisy": labels != data.targets,
        }
    ).astype({"split": object})


def _compute(p: Params) -> dict[str, Any]:
    data = load_data(p)
    frame = build_labels(p, data)
    counts = frame["split"].value_counts().to_dict()
    meta = {
        "dataset": data.name,
        "num_classes": data.num_classes,
        "in_shape": list(data.in_shape),
        "split": p.data.model_dump(include={"val_fraction", "test_fraction", "split_seed"}),
        "official_test_split": data.official_test is not None,
        "noise": p.noise.model_dump(),
        "counts": counts,
        "data_files": data_manifest(p),
    }
    write_parquet(layout.labels_table(p), frame, metadata=meta)
    train = frame["split"] == "train"
    return {
        "dataset": data.name,
        "images": len(frame),
        **{f"n_{k}": int(v) for k, v in counts.items()},
        "noisy_train_labels": int(frame.loc[train, "is_noisy"].sum()),
        "noise_rate_realised": float(frame.loc[train, "is_noisy"].mean()),
    }


def read_labels(p: Params) -> tuple[pd.DataFrame, dict[str, Any]]:
    """labels.parquet checked against its schema, and its metadata."""
    path = layout.labels_table(p)
    frame = read_parquet(path, LABEL_COLUMNS)
    meta = parquet_metadata(path)
    if meta.get("dataset") != p.data.dataset:
        raise PruneflowError(
            f"{path} is for data set {meta.get('dataset')!r}, not {p.data.dataset!r}"
        )
    if (files := data_manifest(p)) is not None and meta.get("data_files") != files:
        raise PruneflowError(
            f"{path} was made from other files than those under data.root={p.data.root} "
            f"(images added, removed or replaced since): run `pruneflow stage prepare` again"
        )
    return frame, meta


PREPARE = Step(
    name="prepare",
    reads=(
        "data.dataset",
        "data.root",
        "data.val_fraction",
        "data.test_fraction",
        "data.split_seed",
        "data.image_size",
        "noise.rate",
        "noise.kind",
        "noise.seed",
    ),
    inputs=lambda p: [],
    outputs=lambda p: [layout.labels_table(p)],
    compute=_compute,
    description="fixed split + label noise -> labels.parquet",
    # a data factory's module (package.module:factory) is part of the fingerprint
    environment=lambda p: user_code([p.data.dataset]),
)
