"""Data sets, fixed splits and label noise."""

from pruneflow.data.datasets import ImageData, load_dataset
from pruneflow.data.noise import make_noisy_labels
from pruneflow.data.splits import make_splits

__all__ = ["ImageData", "load_dataset", "make_noisy_labels", "make_splits"]
