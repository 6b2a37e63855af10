"""The pipeline's steps by name (what ``pruneflow stage NAME`` and the DVC stages run)."""

from pruneflow.steps.base import Record, Step
from pruneflow.steps.chex import CHEX_STEPS
from pruneflow.steps.data import PREPARE
from pruneflow.steps.dense import TRAIN_DENSE
from pruneflow.steps.export import CHEX_EXPORT, SPDY_EXPORT
from pruneflow.steps.recondb import RECONDB, RECONDB_LAYER
from pruneflow.steps.report import REPORT
from pruneflow.steps.sdd import SDD_STEPS
from pruneflow.steps.spdy import SPDY_ONESHOT, SPDY_SEARCH
from pruneflow.steps.spdy_gmp import SPDY_GMP, SPDY_RESULTS
from pruneflow.steps.structured import STRUCTURED_STEPS
from pruneflow.steps.structured_compare import STRUCTURED_COMPARE_STEPS
from pruneflow.steps.structured_export import STRUCTURED_EXPORT
from pruneflow.steps.timing import PROFILE

STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        PREPARE,
        TRAIN_DENSE,
        PROFILE,
        RECONDB_LAYER,
        RECONDB,
        SPDY_SEARCH,
        SPDY_ONESHOT,
        SPDY_GMP,
        SPDY_RESULTS,
        SPDY_EXPORT,
        *SDD_STEPS,
        *CHEX_STEPS,
        CHEX_EXPORT,
        REPORT,
        *STRUCTURED_STEPS,
        STRUCTURED_EXPORT,
        *STRUCTURED_COMPARE_STEPS,
    )
}

__all__ = ["STEPS", "Record", "Step"]
