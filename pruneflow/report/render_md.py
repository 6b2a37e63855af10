"""Blocks -> Markdown (GitHub flavour): pipe tables, figures as relative links to PNG files."""

from __future__ import annotations

from collections.abc import Sequence

from pruneflow.report.doc import Block, Code, Figure, Heading, Note, Table, Text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(t: Table) -> str:
    align = t.aligned()
    lines = [
        f"**{t.caption}**",
        "",
        "| " + " | ".join(_cell(c) for c in t.columns) + " |",
        "|" + "|".join("---:" if a else ":---" for a in align) + "|",
        *("| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows),
    ]
    if t.note:
        lines += ["", f"*{t.note}*"]
    return "\n".join(lines)


def render_markdown(blocks: Sequence[Block], figures_dir: str = "figures") -> str:
    """``figures_dir``: the figures' folder relative to the Markdown file."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Text):
            out.append(b.text)
        elif isinstance(b, Note):
            out.append(f"> **{b.text}**")
        elif isinstance(b, Code):
            out.append(f"```\n{b.text}\n```")
        elif isinstance(b, Table):
            out.append(_table(b))
        elif isinstance(b, Figure):
            out.append(f"![{_cell(b.caption)}]({figures_dir}/{b.file})\n\n*{b.caption}*")
        else:  # pragma: no cover - Block is a closed union
            raise TypeError(f"unknown report block {b!r}")
    return "\n\n".join(out) + "\n"
