"""Tasks for data preparation and dense training."""

from pruneflow.steps.data import PREPARE
from pruneflow.steps.dense import TRAIN_DENSE
from tasks.common import as_task

prepare = as_task(PREPARE, retries=1)  # retried: reading data from a shared disk may hiccup
train_dense = as_task(TRAIN_DENSE)
