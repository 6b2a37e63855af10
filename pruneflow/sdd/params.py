"""The ``sdd`` section of params.yaml (defined in :mod:`pruneflow.config`) and helpers.

``scoped(params, model)`` is ``config.scoped(params, "sdd:MODEL")``; ``with_sdd`` replaces
``sdd`` keys of a params object (tests, benches).
"""

from __future__ import annotations

from typing import Any

from pruneflow import config
from pruneflow.config import SDD_METHODS as METHODS
from pruneflow.config import SDD_MODES as MODES
from pruneflow.config import Params, PhaseParams, SddParams, from_dict

SddConfig = Params

__all__ = [
    "METHODS",
    "MODES",
    "PhaseParams",
    "SddConfig",
    "SddParams",
    "from_dict",
    "scoped",
    "with_sdd",
]


def scoped(params: Params, model: str | None = None) -> Params:
    """The sdd view of ``params``: data set and noise rate from ``sdd``; with ``model`` also the
    model and the dense training (``sdd.train``)."""
    return config.scoped(params, f"sdd:{model}" if model else "sdd")


def with_sdd(params: Params | None = None, **sdd: Any) -> Params:
    """``params`` (defaults if None) with ``sdd`` keys replaced, validated (tests, benches)."""
    tree = (params or Params()).model_dump(mode="json")
    tree["sdd"] = _merge(tree.get("sdd", {}), sdd)
    return from_dict(tree)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    # nested sections merge key by key: {"retrain": {"epochs": 1}} keeps the other retrain keys
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
