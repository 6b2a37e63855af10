"""The SPDY tables as the report reads them: the producers' own column sets and paths.

:mod:`pruneflow.spdy.paths` names the tables and their columns (``profile.parquet``,
``search.parquet``, ``oneshot.parquet``, ``profiles.parquet``, ``results.parquet``), for the
steps that write them and for this reader; the folders come from :mod:`pruneflow.layout`
(``layout.spdy_dir``, ``layout.spdy_target_dir``, ``layout.target_name``). This module only
adds what a reader checks beyond dtypes: the values the categorical columns may take. One
definition each, so a column renamed by a producer fails here at once, naming the file, never
as a silently empty figure.

``p`` is always the SPDY view of one model, ``config.scoped(params, "spdy:MODEL")``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from pruneflow.errors import PruneflowError
from pruneflow.io import read_parquet
from pruneflow.spdy.paths import (
    ONESHOT_COLUMNS,
    PROFILE_COLUMNS,
    PROFILES_COLUMNS,
    RESULTS_COLUMNS,
    SEARCH_COLUMNS,
    oneshot_file,
    profile_file,
    profiles_file,
    results_file,
    search_file,
)

__all__ = [
    "ONESHOT",
    "ONESHOT_PROFILES",
    "PROFILE",
    "PROFILES",
    "RESULTS",
    "RESULTS_PROFILES",
    "SEARCH",
    "SEARCH_PHASES",
    "TableSchema",
    "oneshot_file",
    "profile_file",
    "profiles_file",
    "results_file",
    "search_file",
]

ONESHOT_PROFILES = ("spdy", "uniform", "gmp", "prior")
RESULTS_PROFILES = ("spdy", "uniform", "gmp")
SEARCH_PHASES = ("random", "local")


@dataclass(frozen=True)
class TableSchema:
    """A table's required columns (name -> pandas ``dtype.kind`` letters, as
    :func:`pruneflow.io.read_parquet` checks them) and the values some columns may take.
    Extra columns are allowed."""

    name: str
    columns: dict[str, str]
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def check(self, frame: pd.DataFrame, where: str | os.PathLike[str] = "") -> None:
        at = f" {where}" if where else ""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise PruneflowError(
                f"{self.name} table{at} lacks columns: {', '.join(missing)} "
                f"(has: {', '.join(map(str, frame.columns))})"
            )
        for col, kinds in self.columns.items():
            if frame[col].dtype.kind not in kinds:
                raise PruneflowError(
                    f"{self.name} table{at}: column '{col}' has dtype {frame[col].dtype}, "
                    f"expected kind {kinds!r}"
                )
        for col, allowed in self.values.items():
            bad = sorted({str(v) for v in frame[col].dropna()} - set(allowed))
            if bad:
                raise PruneflowError(
                    f"{self.name} table{at}: column '{col}' holds {', '.join(bad)}; "
                    f"allowed: {', '.join(allowed)}"
                )

    def read(self, path: str | os.PathLike[str]) -> pd.DataFrame:
        """Read and check a table; a missing, corrupt or mismatched file names itself."""
        frame = read_parquet(path, self.columns)
        self.check(frame, path)
        return frame


ONESHOT = TableSchema("SPDY one-shot", ONESHOT_COLUMNS, {"profile": ONESHOT_PROFILES})
SEARCH = TableSchema("SPDY search", SEARCH_COLUMNS, {"phase": SEARCH_PHASES})
PROFILE = TableSchema("SPDY profile", PROFILE_COLUMNS)
PROFILES = TableSchema("SPDY profiles", PROFILES_COLUMNS, {"profile": ONESHOT_PROFILES})
RESULTS = TableSchema("SPDY gradual pruning", RESULTS_COLUMNS, {"profile": RESULTS_PROFILES})
