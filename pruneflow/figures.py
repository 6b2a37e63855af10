"""Writing matplotlib figures: Agg canvas (no display needed), PNG, atomically.

matplotlib is imported when a figure is made, not when a plotting module is: it costs over a
CPU-second per process, and most processes that load the steps (a ``pruneflow stage``, a Dask
worker, a deployment's flow run of one method) draw nothing. The plotting modules make their
figures with :func:`new_figure` and import the rest of matplotlib in the functions that draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruneflow.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(**kwargs: Any) -> Figure:
    """A matplotlib ``Figure(**kwargs)`` (no pyplot, no global state)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Render ``fig`` to ``path`` as PNG; a crash never leaves a partial file there."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)
