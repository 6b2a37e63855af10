"""The report as data: a list of blocks that the Markdown and HTML renderers both turn into text.

Sections build blocks from the tables; they never write Markdown or HTML themselves, so the two
files always say the same thing. Inline text may hold `code` spans (backticks) and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NUMBER = re.compile(r"^[-+−]?\d")  # a cell that starts with a number is right-aligned


@dataclass(frozen=True)
class Heading:
    text: str
    level: int  # 1: the title, 2: a method, 3: a part of it
    anchor: str


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Note:
    """Something the reader should notice: a method not run, a table not produced yet."""

    text: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Table:
    """``key`` is unique in the report (the HTML table's id); cells are already formatted."""

    key: str
    caption: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    # columns whose cells are right-aligned; None: those whose every cell looks like a number
    numeric: list[bool] | None = field(default=None)

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.key}: row {row} does not have {self.columns}")

    def aligned(self) -> list[bool]:
        if self.numeric is not None:
            return self.numeric
        return [
            bool(self.rows)
            and all(_NUMBER.match(r[i].strip()) or r[i].strip() in ("", "–") for r in self.rows)
            for i in range(len(self.columns))
        ]


@dataclass(frozen=True)
class Figure:
    """A PNG under the report's ``figures/`` folder (``file`` is its name there)."""

    key: str
    file: str
    caption: str


Block = Heading | Text | Note | Code | Table | Figure
