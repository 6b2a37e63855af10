"""The pipeline's steps by name (what ``pruneflow stage NAME`` and the DVC stages run)."""

from pruneflow.steps.base import Record, Step
from pruneflow.steps.data import PREPARE
from pruneflow.steps.dense import TRAIN_DENSE

STEPS: dict[str, Step] = {s.name: s for s in (PREPARE, TRAIN_DENSE)}

__all__ = ["STEPS", "Record", "Step"]
