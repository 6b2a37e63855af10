"""The ``chex`` section of params.yaml (defined in :mod:`pruneflow.config`) and helpers."""

from __future__ import annotations

from typing import Any

from pruneflow import config
from pruneflow.config import CHEX_METHODS as METHODS
from pruneflow.config import CHEX_VARIANTS as VARIANTS
from pruneflow.config import (
    MODEL_NAMES,
    ChexCompareParams,
    ChexLatencyParams,
    ChexParams,
    Params,
)
from pruneflow.errors import PruneflowError

CHEX_MODELS = MODEL_NAMES

__all__ = [
    "CHEX_MODELS",
    "METHODS",
    "VARIANTS",
    "ChexCompareParams",
    "ChexLatencyParams",
    "ChexParams",
    "chex_scoped",
    "chex_section",
    "with_chex",
]


def with_chex(
    params: Params | None = None, chex: ChexParams | dict[str, Any] | None = None
) -> Params:
    """``params`` (defaults when None) with ``chex`` replacing its section if given.

    A dict is merged into the current section and validated (errors are PruneflowErrors).
    """
    params = params or Params()
    current = params.chex
    if isinstance(chex, dict):
        try:
            chex = ChexParams.model_validate({**current.model_dump(), **chex})
        except ValueError as exc:
            raise PruneflowError(f"chex: {exc}".replace("\n", " ")) from None
    return params.model_copy(update={"chex": chex or current})


def chex_section(params: Params) -> ChexParams:
    return params.chex


def chex_scoped(params: Params, model: str | None = None) -> Params:
    """``config.scoped(params, "chex:MODEL")`` (or ``"chex"`` without a model)."""
    return config.scoped(params, f"chex:{model}" if model else "chex")
