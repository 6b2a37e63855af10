"""Layer-wise reconstruction database for SPDY, built with OBC's exact OBS.

Building blocks, each layer independent so the pipeline can fan them out:

- :func:`capture_hessians` (``hessian.py``): one dense forward pass with hooks ->
  ``{layer: Hessian}`` (float64 running means, dense or low-rank).
- :func:`solve_layer` (``solve.py``, with ``obs.py`` and ``sparsegpt.py``): one layer's weights
  at every sparsity level, per-level loss and relative error, the solver used.
- :func:`write_layer`, :func:`write_index`, :class:`ReconstructionDB`, :class:`Stitcher`
  (``database.py``): the files, lazy reading, validation, and profile stitching.
- :func:`build_database` (``build.py``): all of it in one call.
"""

from pruneflow.recon.build import BuildResult, build_database
from pruneflow.recon.database import (
    INDEX_COLUMNS,
    ReconstructionDB,
    Stitcher,
    level_key,
    write_index,
    write_layer,
)
from pruneflow.recon.hessian import Hessian, capture_hessians
from pruneflow.recon.solve import LayerSolution, rel_error, solve_layer, zeros_for

__all__ = [
    "INDEX_COLUMNS",
    "BuildResult",
    "Hessian",
    "LayerSolution",
    "ReconstructionDB",
    "Stitcher",
    "build_database",
    "capture_hessians",
    "level_key",
    "rel_error",
    "solve_layer",
    "write_index",
    "write_layer",
    "zeros_for",
]
