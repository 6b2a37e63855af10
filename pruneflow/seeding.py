"""The one door to torch's process-global random generator.

Every random choice in pruneflow draws from a generator made from the step's seeds
(``torch.Generator``, ``numpy.random.Generator``), never from a process-global one: a global
generator is shared by the thread task runner's concurrent steps, so what one step drew would
depend on what the others did meanwhile. One exception cannot be avoided: ``torch.nn``'s
module constructors and ``torch.nn.init`` draw a new model's initial weights from torch's global
generator and take no generator. :func:`torch_seeded` makes that deterministic: inside it the
global generator is seeded for this thread alone (every other use waits on one lock), and its
state is put back when it exits (``torch.random.fork_rng``), so nothing outside a seeded block
can see or change what a block draws.

``tests/test_determinism.py`` checks that no other module of ``pruneflow/`` reaches a global
generator (``torch.manual_seed``, ``torch.rand*`` without ``generator=``, ``np.random``'s module
functions, ``random``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

# held by every use of torch's global generator: a seeded block, and a model build whose
# initial weights are overwritten at once (loading a checkpoint builds, then loads)
GLOBAL_RNG_LOCK = threading.RLock()


@contextlib.contextmanager
def torch_seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global CPU generator seeded ``seed``, for this thread only.

    Build models (and re-initialise their parameters) inside: the same seed gives the same
    weights whatever other threads do, and the generator's state outside is left as it was.
    """
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
