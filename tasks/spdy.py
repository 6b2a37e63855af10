"""Tasks of the SPDY pipeline."""

from pruneflow.steps.recondb import RECONDB, RECONDB_LAYER
from pruneflow.steps.spdy import SPDY_ONESHOT, SPDY_SEARCH
from pruneflow.steps.spdy_gmp import SPDY_GMP, SPDY_RESULTS
from pruneflow.steps.timing import PROFILE
from tasks.common import as_task

profile = as_task(PROFILE)
recondb_layer = as_task(RECONDB_LAYER)
recondb = as_task(RECONDB)
spdy_search = as_task(SPDY_SEARCH)
spdy_oneshot = as_task(SPDY_ONESHOT)
spdy_gmp = as_task(SPDY_GMP)
spdy_results = as_task(SPDY_RESULTS)
