"""Range checks a reader makes on the values of a record or table it reads.

A file that parses can still hold a value no run produces: a flipped bit in a float, an edit by
hand. Accuracies live in [0, 1], losses and distances are finite and non-negative, FLOPs and
parameter counts positive. A reader that knows this refuses such a file with one line naming
it and the first bad value, instead of plotting or reporting from it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pruneflow.errors import PruneflowError


@dataclass(frozen=True)
class ValueRanges:
    """Which fields are fractions in [0, 1] (accuracies, sparsities), finite and >= 0 (losses,
    distances), finite and > 0 (FLOPs, counts) or only finite. ``nullable`` fields may be
    missing or null (``noise_fit`` on clean labels); every other listed field must be there."""

    fractions: tuple[str, ...] = ()
    non_negative: tuple[str, ...] = ()
    positive: tuple[str, ...] = ()
    finite: tuple[str, ...] = ()
    nullable: tuple[str, ...] = ()

    def check_record(self, record: Mapping[str, Any], where: str | os.PathLike[str]) -> None:
        """Check one JSON record's fields."""
        for name, value in record.items():
            self._check(name, [value], where)
        for name in self._fields():
            if name not in record and name not in self.nullable:
                raise PruneflowError(f"{where}: no '{name}' (a damaged or foreign file?)")

    def check_frame(self, frame: pd.DataFrame, where: str | os.PathLike[str]) -> None:
        """Check the listed columns a table has (its reader checks which columns it needs)."""
        for name in self._fields():
            if name in frame.columns:
                self._check(name, frame[name].tolist(), where)

    def _fields(self) -> Iterable[str]:
        return (*self.fractions, *self.non_negative, *self.positive, *self.finite)

    def _check(self, name: str, values: list[Any], where: str | os.PathLike[str]) -> None:
        # a strict bound for "> 0", not the smallest float: with the CPU's flush-to-zero mode on
        # (torch.set_flush_denormal), a denormal bound compares equal to 0
        strict = name in self.positive
        if name in self.fractions:
            low, high, what = 0.0, 1.0, "a fraction in [0, 1]"
        elif name in self.non_negative:
            low, high, what = 0.0, math.inf, "finite and >= 0"
        elif strict:
            low, high, what = 0.0, math.inf, "finite and > 0"
        elif name in self.finite:
            low, high, what = -math.inf, math.inf, "finite"
        else:
            return
        for value in values:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                if name in self.nullable:
                    continue  # a table stores a record's null as NaN
                if value is None:
                    raise PruneflowError(f"{where}: '{name}' is null, expected {what}")
            number = _number(value)
            if number is None or not _within(number, low, high, strict):
                raise PruneflowError(f"{where}: '{name}' = {value!r} is not {what} (damaged?)")


def _within(number: float, low: float, high: float, strict_low: bool) -> bool:
    above = low < number if strict_low else low <= number
    return math.isfinite(number) and above and number <= high


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
