"""One method's part of the report: its blocks, and which of its tables were there."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pruneflow.report.doc import Block, Heading, Note


@dataclass
class Section:
    method: str  # "SPDY", "Sparse double descent", "CHEX"
    anchor: str
    command: str  # what produces its tables
    run: str = ""  # the one command to suggest when nothing ran (default: ``command``)
    found: list[Path] = field(default_factory=list)  # tables read
    missing: list[Path] = field(default_factory=list)  # tables expected but absent
    blocks: list[Block] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run = self.run or self.command

    @property
    def status(self) -> str:
        if not self.found:
            return "not run"
        return "partly run" if self.missing else "ran"

    def look(self, path: Path) -> bool:
        """Whether ``path`` exists, noting it as found or missing."""
        if path.is_file():
            self.found.append(path)
            return True
        self.missing.append(path)
        return False

    def finish(self, title: str, intro: Block) -> Section:
        """Put the title and ``intro`` first; with no table found, only say what to run."""
        heading = Heading(title, 2, self.anchor)
        if not self.found:
            note = f"{self.method} was not run: none of its tables exist. `{self.run}` makes them."
            self.blocks = [heading, Note(note)]
        else:
            self.blocks = [heading, intro, *self.blocks]
        return self
