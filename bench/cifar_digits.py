"""Write a small CIFAR-10-format folder of real digits, to exercise the 32x32 RGB models here.

    uv run python bench/cifar_digits.py DIR [--per-batch 100] [--test 100] [--seed 0]

pruneflow never downloads data, so without CIFAR files the resnet18_cifar path runs on mnist5k
digits in CIFAR-10's python pickle layout: each 28x28 digit zero-padded to 32x32 and repeated
over three channels, ``DIR/cifar-10-batches-py/data_batch_1..5`` of ``--per-batch`` images,
``test_batch`` of ``--test``, ``batches.meta`` with the ten class names. Images are drawn
without replacement, class-balanced per file, with ``--seed``. Then run, e.g.:

    uv run pruneflow run spdy --set spdy.dataset=cifar10 --set data.root=DIR \\
        --set 'spdy.models=[resnet18_cifar]' ...

The figures this gives say whether the path works (and how the time model behaves on a deep
conv net), not what resnet18 reaches on CIFAR-10. Prints one JSON line: the folder and counts.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np

from pruneflow.data import load_dataset

_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _take_balanced(pool: list[np.ndarray], n: int) -> np.ndarray:
    """``n`` indices off the front of the per-class pools: ``n // classes`` of each, one more
    of the first ``n % classes`` classes."""
    k = len(pool)
    take = []
    for c in range(k):
        m = n // k + (c < n % k)
        take.append(pool[c][:m])
        pool[c] = pool[c][m:]
    return np.concatenate(take)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--per-batch", type=int, default=100, help="images per data_batch_i")
    parser.add_argument("--test", type=int, default=100, help="images in test_batch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = args.root / "cifar-10-batches-py"
    if folder.exists():
        raise SystemExit(f"{folder} exists: remove it or pick another DIR")
    data = load_dataset("mnist5k")
    need = 5 * args.per_batch + args.test
    if need > len(data) or min(args.per_batch, args.test) < data.num_classes:
        raise SystemExit(
            f"need {data.num_classes} to {len(data)} images per file and {len(data)} in all, "
            f"asked for {need}"
        )
    rng = np.random.default_rng(args.seed)
    pool = [rng.permutation(np.flatnonzero(data.targets == c)) for c in range(data.num_classes)]
    raw = data.raw.numpy()[:, 0]  # uint8 [N, 28, 28]
    folder.mkdir(parents=True)
    for name in _FILES:
        idx = _take_balanced(pool, args.test if name == "test_batch" else args.per_batch)
        rgb = np.zeros((len(idx), 3, 32, 32), dtype=np.uint8)
        rgb[:, :, 2:30, 2:30] = raw[idx][:, None]
        batch = {"data": rgb.reshape(len(idx), 3072), "labels": data.targets[idx].tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    names = [str(c) for c in range(data.num_classes)]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    print(json.dumps({"folder": str(folder), "train": 5 * args.per_batch, "test": args.test}))


if __name__ == "__main__":
    main()
