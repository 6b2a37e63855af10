"""Data sets through the same loading code as real data, on tiny files in the real formats."""

import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from pruneflow.data import load_dataset
from pruneflow.errors import PruneflowError


def _write_idx(path, array: np.ndarray) -> None:
    type_code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root, folder="MNIST", n_train=30, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28))
        labels = np.arange(n) % 10
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return raw


def write_cifar10(root, per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            "labels": list(rng.integers(0, 10, size=per_batch)),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [f"c{i}" for i in range(10)]})
    )
    return folder


def write_cifar100(root, n=6, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test"):
        batch = {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "fine_labels": list(rng.integers(0, 100, size=n)),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))


def test_embedded_sets():
    digits = load_dataset("digits")
    assert len(digits) == 1797 and digits.in_shape == (1, 8, 8) and digits.num_classes == 10
    assert digits.official_test is None
    mnist5k = load_dataset("mnist5k")
    assert len(mnist5k) == 5000 and mnist5k.in_shape == (1, 28, 28)
    assert np.bincount(mnist5k.targets).tolist() == [500] * 10
    x = mnist5k.images(np.arange(500))
    assert x.dtype == torch.float32 and abs(float(x.mean())) < 0.5 and 0.7 < float(x.std()) < 1.4


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_idx_files(tmp_path, name, folder):
    write_mnist(tmp_path, folder)
    data = load_dataset(name, tmp_path)
    assert len(data) == 40 and data.in_shape == (1, 28, 28)
    assert data.official_test.sum() == 10 and not data.official_test[:30].any()
    np.testing.assert_array_equal(data.targets[:30], np.arange(30) % 10)


def test_cifar_pickles(tmp_path):
    write_cifar10(tmp_path)
    data = load_dataset("cifar10", tmp_path)
    assert len(data) == 24 and data.in_shape == (3, 32, 32) and data.num_classes == 10
    assert data.official_test.sum() == 4
    write_cifar100(tmp_path)
    data = load_dataset("cifar100", tmp_path)
    assert len(data) == 12 and data.num_classes == 100


def test_imagefolder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    data = load_dataset("imagefolder", tmp_path, image_size=16)
    assert len(data) == 10 and data.num_classes == 2 and data.in_shape == (3, 16, 16)
    assert data.official_test.sum() == 4
    assert data.images(np.arange(3)).shape == (3, 3, 16, 16)


def test_missing_root_and_missing_files(tmp_path):
    with pytest.raises(PruneflowError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nope")
    with pytest.raises(PruneflowError, match="nothing is downloaded"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(PruneflowError, match="no .*train"):
        load_dataset("imagefolder", tmp_path)
    with pytest.raises(PruneflowError, match="unknown data set"):
        load_dataset("svhn", tmp_path)


def test_corrupt_files(tmp_path):
    raw = write_mnist(tmp_path)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")  # truncated header
    with pytest.raises(PruneflowError, match="MNIST|mnist"):
        load_dataset("mnist", tmp_path)
    folder = write_cifar10(tmp_path / "c")
    (folder / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(PruneflowError, match="corrupt"):
        load_dataset("cifar10", tmp_path / "c")
