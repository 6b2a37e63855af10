"""How numbers read in the report's tables (accuracies in %, speedups as 2.00x, seeds as ±)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

DASH = "–"


def _finite(values: Iterable[float]) -> np.ndarray:
    x = np.asarray(list(values), dtype=float)
    return x[np.isfinite(x)]


def mean_std(values: Iterable[float], scale: float = 1.0, digits: int = 2, suffix: str = "") -> str:
    """``"97.10 ± 0.12"`` over several values (sample std), ``"97.10"`` for one, dash for none."""
    x = _finite(values) * scale
    if x.size == 0:
        return DASH
    text = f"{x.mean():.{digits}f}{suffix}"
    if x.size > 1:
        text += f" ± {x.std(ddof=1):.{digits}f}{suffix}"
    return text


def pct(values: Iterable[float] | float, digits: int = 2) -> str:
    """Fractions -> percent (mean ± std over several)."""
    if isinstance(values, (int, float, np.floating)):
        values = [float(values)]
    return mean_std(values, scale=100.0, digits=digits)


def speedup(values: Iterable[float] | float) -> str:
    """``2.00x`` (the mean when several)."""
    if isinstance(values, (int, float, np.floating)):
        values = [float(values)]
    x = _finite(values)
    return f"{x.mean():.2f}x" if x.size else DASH


def num(value: float, digits: int = 4) -> str:
    """A plain number with ``digits`` significant digits (dash for NaN)."""
    value = float(value)
    return f"{value:.{digits}g}" if math.isfinite(value) else DASH


def target(value: float) -> str:
    """A target speedup: ``2x``, ``2.5x``."""
    return f"{float(value):g}x"


def joined(values: Iterable[object]) -> str:
    items = [str(v) for v in values]
    return ", ".join(items) if items else DASH
