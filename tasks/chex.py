"""Tasks of the CHEX pipeline."""

from pruneflow.steps.chex import CHEX_COMPARE, CHEX_EXTRACT, CHEX_REPORT, CHEX_TRAIN
from tasks.common import as_task

chex_train = as_task(CHEX_TRAIN)
chex_extract = as_task(CHEX_EXTRACT)
chex_compare = as_task(CHEX_COMPARE)
chex_report = as_task(CHEX_REPORT)
