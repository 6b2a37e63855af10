"""One call for a whole database: capture Hessians, solve every layer, write files and index.

The pipeline wraps the same building blocks (``capture_hessians``, ``solve_layer``,
``write_layer``, ``write_index``) as separate cached tasks, one per layer; this function is the
sequential version for tests, the benchmark and interactive use. It builds into a temporary
sibling directory and moves it into place at the end, so a failure leaves no database (and an
older one under the same name untouched).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pruneflow.errors import PruneflowError
from pruneflow.io import atomic_path
from pruneflow.models.zoo import prunable_layers
from pruneflow.recon.database import layer_file, write_index, write_layer
from pruneflow.recon.hessian import capture_hessians
from pruneflow.recon.solve import check_grid, solve_layer


@dataclass
class BuildResult:
    """Where the database went and what each layer cost."""

    path: Path
    hessian_seconds: float
    seconds: float
    layers: list[dict[str, Any]] = field(default_factory=list)


def build_database(
    model: nn.Module,
    batches: Iterable[Tensor | Sequence[Tensor]],
    root: str | Path,
    sparsities: Sequence[float],
    *,
    layers: Sequence[str] | None = None,
    model_name: str | None = None,
    damp: float = 0.01,
    solver: str = "auto",
    device: str | torch.device = "auto",
    low_rank: str | int = "auto",
    progress: bool | str = "auto",
    **solve_options: Any,
) -> BuildResult:
    """Build the database of ``model`` (its prunable layers, or ``layers``) under ``root``.

    ``solve_options`` go to :func:`solve_layer` (``row_dtype``, ``batch_bytes``,
    ``exact_max_work``). Returns per-layer solver, dampening and seconds.
    """
    start = time.perf_counter()
    grid = check_grid(sparsities)
    names = list(layers) if layers is not None else prunable_layers(model)
    modules = dict(model.named_modules())
    hessians = capture_hessians(
        model, names, batches, device=device, low_rank=low_rank, progress=progress
    )
    hessian_seconds = time.perf_counter() - start
    rows: list[dict[str, Any]] = []
    report: list[dict[str, Any]] = []
    root = Path(root)
    with atomic_path(root) as tmp:
        tmp.mkdir()
        for name in names:
            weight = modules[name].weight
            try:
                sol = solve_layer(
                    weight,
                    hessians.pop(name),
                    grid,
                    damp=damp,
                    solver=solver,
                    device=device,
                    name=name,
                    progress=progress,
                    **solve_options,
                )
            except PruneflowError as exc:
                raise PruneflowError(f"{exc} (building {root / layer_file(name)})") from exc
            rows += write_layer(tmp, name, sol)
            report.append(
                {
                    "layer": name,
                    "solver": sol.solver,
                    "damp": sol.damp,
                    "seconds": sol.seconds,
                    "mean_rel_error": float(sol.rel_error[1:].mean()) if len(grid) > 1 else 0.0,
                }
            )
            del sol
        write_index(tmp, rows, model=model_name, extra={"damp": damp})
    return BuildResult(root, hessian_seconds, time.perf_counter() - start, report)
