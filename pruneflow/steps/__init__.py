"""The pipeline's steps by name (what ``pruneflow stage NAME`` and the DVC stages run)."""

from pruneflow.steps.base import Record, Step
from pruneflow.steps.chex import CHEX_STEPS
from pruneflow.steps.data import PREPARE
from pruneflow.steps.dense import TRAIN_DENSE
from pruneflow.steps.sdd import SDD_STEPS
from pruneflow.steps.timing import PROFILE

STEPS: dict[str, Step] = {
    s.name: s for s in (PREPARE, TRAIN_DENSE, PROFILE, *SDD_STEPS, *CHEX_STEPS)
}

__all__ = ["STEPS", "Record", "Step"]
