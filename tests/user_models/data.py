"""A user's data factories: ``() -> (train_set, test_set, num_classes)``, good and bad."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class Images(Dataset):
    """(image [1, 8, 8] float, int label) pairs, as a user's own Dataset yields them."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, label_type=int):
        self.images = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
        self.labels = labels
        self.label_type = label_type

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.label_type(self.labels[i])


def _digits(limit: int = 600) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images[:limit], bunch.target[:limit]


def digits() -> tuple[Dataset, Dataset, int]:
    images, labels = _digits()
    return Images(images[:500], labels[:500]), Images(images[500:], labels[500:]), 10


def float_labels() -> tuple[Dataset, Dataset, int]:
    images, labels = _digits(60)
    return Images(images[:50], labels[:50], float), Images(images[50:], labels[50:], float), 10


def lists() -> tuple[list, list, int]:
    return [(torch.zeros(1, 8, 8), 0)], [(torch.zeros(1, 8, 8), 1)], 2


def too_few_classes() -> tuple[Dataset, Dataset, int]:
    images, labels = _digits(60)
    return Images(images[:50], labels[:50]), Images(images[50:], labels[50:]), 5
