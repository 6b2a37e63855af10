"""pruneflow: reproducible pruning pipelines."""

import os as _os
import sys as _sys

# torch's OpenMP threads spin while they wait for work (libgomp's default, read once when torch
# loads). Whenever anything else wants the same cores (a second fan-out item, another process),
# a spinning team starves it: one thread of a two-thread team descheduled makes every parallel
# region wait a time slice. Measured on 2 cores beside one busy process: a CHEX comparison run
# (resnet_mini -90%, 2 epochs) took 49 s spinning on 2 threads, 7.0 s waiting passively, 4.7 s
# on 1 thread; Dask worker processes starved each other the same way (tasks/runner.py). A
# user's own setting, or a torch loaded before pruneflow, keeps its policy.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
