"""SPDY's sparsity grid and the layers every method leaves dense.

The grid is the one of SPDY's code (Frantar & Alistarh, ICML 2022): the dense level 0.0, then
``steps + 1`` levels whose *density* falls geometrically from ``1 - min_sparsity`` to
``1 - max_sparsity``, so every step removes the same fraction of the remaining weights (about
9.7% with the defaults). Defaults give 42 levels: 0.0, 0.4000, 0.4584, 0.5111, ..., 0.9889, 0.9900.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fnmatch import fnmatchcase

from pruneflow.errors import PruneflowError

__all__ = ["SKIP_POLICY", "skipped_layers", "sparsity_grid"]


def sparsity_grid(
    min_sparsity: float = 0.4, max_sparsity: float = 0.99, steps: int = 40
) -> list[float]:
    """``[0.0] + [1 - (1 - min) * rho**k for k in 0..steps]`` with ``rho`` reaching ``max``.

    The last level is exactly ``max_sparsity`` (no rounding drift), levels strictly increase.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PruneflowError(f"sparsity grid: steps must be an integer >= 1, got {steps!r}")
    for name, value in (("min_sparsity", min_sparsity), ("max_sparsity", max_sparsity)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value < 1:
            raise PruneflowError(f"sparsity grid: {name} must be a number in (0, 1), got {value!r}")
    if min_sparsity >= max_sparsity:
        raise PruneflowError(
            f"sparsity grid: min_sparsity ({min_sparsity}) must be below "
            f"max_sparsity ({max_sparsity})"
        )
    d0, d1 = 1.0 - float(min_sparsity), 1.0 - float(max_sparsity)
    rho = (d1 / d0) ** (1.0 / steps)
    levels = [0.0] + [1.0 - d0 * rho**k for k in range(steps)] + [float(max_sparsity)]
    levels[1] = float(min_sparsity)
    return levels


# Per-model override of which ends of the prunable-layer list stay dense. mlp1024's input
# layer (784 -> 1024) is one of its three big layers and prunes well; only the 10-way output
# layer is kept dense.
SKIP_POLICY: dict[str, tuple[bool, bool]] = {"mlp1024": (False, True)}


def skipped_layers(
    model_name: str,
    layer_names: Sequence[str],
    skip_first_last: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[str]:
    """The prunable layers left dense: by default the first and the last (SPDY's rule).

    ``SKIP_POLICY`` overrides it per model (``(skip_first, skip_last)``); with
    ``skip_first_last=False`` nothing is skipped. ``include`` (glob patterns over the layer
    names) replaces that rule: exactly the matching layers are pruned. ``exclude`` then leaves
    the layers it matches dense. A pattern that matches no layer, or a selection that leaves
    nothing to prune, is an error (a typo must not silently prune everything or nothing).
    """
    names = list(layer_names)
    if not names:
        raise PruneflowError(f"model '{model_name}' has no prunable layers to choose from")
    if len(set(names)) != len(names):
        raise PruneflowError(f"model '{model_name}': duplicate layer names in {names}")
    for kind, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns:
            if not any(fnmatchcase(n, pattern) for n in names):
                shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                raise PruneflowError(
                    f"{kind} pattern '{pattern}' matches none of {model_name}'s prunable layers "
                    f"({shown}; `pruneflow layers` lists them)"
                )
    if include:
        pruned = [n for n in names if any(fnmatchcase(n, pat) for pat in include)]
        skipped = [n for n in names if n not in pruned]
    elif not skip_first_last:
        skipped = []
    else:
        first, last = SKIP_POLICY.get(model_name, (True, True))
        skipped = ([names[0]] if first else []) + ([names[-1]] if last else [])
    skipped += [n for n in names if any(fnmatchcase(n, pat) for pat in exclude)]
    skipped = [n for n in names if n in set(skipped)]  # a one-layer model skips it once
    if exclude and len(skipped) == len(names):
        raise PruneflowError(f"include/exclude leave no layer of {model_name} to prune")
    return skipped
