"""Tasks of the SPDY pipeline."""

from pruneflow.steps.timing import PROFILE
from tasks.common import as_task

profile = as_task(PROFILE)
