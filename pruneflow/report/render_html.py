"""Blocks -> one self-contained HTML page: PNGs inlined as base64 data URIs, tables as HTML
tables, a little inline CSS. No script, no external stylesheet, font or image: the file can be
mailed, archived or opened offline and looks the same."""

from __future__ import annotations

import base64
import html
import re
import struct
from collections.abc import Sequence
from pathlib import Path

from pruneflow.errors import PruneflowError
from pruneflow.report.doc import Block, Code, Figure, Heading, Note, Table, Text

_CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #f6f7f9; color: #1d2330;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff;
  box-shadow: 0 0 0 1px #e3e6eb; }
h1 { font-size: 28px; margin: 8px 0 4px; }
h2 { font-size: 22px; margin: 40px 0 8px; padding-top: 12px; border-top: 2px solid #d5dae2; }
h3 { font-size: 17px; margin: 28px 0 6px; color: #2c3a55; }
p { margin: 8px 0; }
code { font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; background: #eef1f5;
  padding: 1px 4px; border-radius: 3px; }
pre { font: 13px/1.45 ui-monospace, "DejaVu Sans Mono", monospace; background: #f1f3f6;
  border: 1px solid #dde1e7; border-radius: 4px; padding: 10px 12px; white-space: pre-wrap;
  overflow-wrap: anywhere; }
nav { margin: 8px 0 16px; }
nav a { margin-right: 16px; color: #1f5fbf; text-decoration: none; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: 8px 12px; margin: 10px 0; }
.scroll { overflow-x: auto; margin: 10px 0 18px; }
table { border-collapse: collapse; font-size: 14px; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0 6px; }
th, td { border: 1px solid #d5dae2; padding: 4px 10px; white-space: nowrap; }
th { background: #eef1f6; text-align: left; white-space: normal; min-width: 3em;
  vertical-align: bottom; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) td { background: #f8f9fb; }
.tnote { font-size: 13px; color: #555e6e; margin-top: 4px; max-width: 900px;
  white-space: normal; }
figure { margin: 14px 0 22px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #e3e6eb; }
figcaption { font-size: 13px; color: #454e5e; margin-top: 4px; }
"""

_CODE_SPAN = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    """Escape ``text``; `backtick` spans become <code>."""
    parts = _CODE_SPAN.split(text)
    return "".join(
        f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts)
    )


def png_size(data: bytes, where: str | Path = "") -> tuple[int, int]:
    """(width, height) from a PNG's header; anything else is an error naming ``where``."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise PruneflowError(f"{where}: not a PNG image")
    return struct.unpack(">II", data[16:24])


def _figure(b: Figure, figures: Path) -> str:
    path = figures / b.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PruneflowError(f"cannot read figure {path}: {exc.strerror or exc}") from exc
    width, height = png_size(data, path)
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    alt = html.escape(b.caption, quote=True)
    return (
        f'<figure id="fig-{html.escape(b.key, quote=True)}">'
        f'<img src="{uri}" alt="{alt}" width="{width}" height="{height}">'
        f"<figcaption>{_inline(b.caption)}</figcaption></figure>"
    )


def _table(t: Table) -> str:
    align = t.aligned()
    head = "".join(f'<th scope="col">{_inline(c)}</th>' for c in t.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_inline(c)}</td>' if a else f"<td>{_inline(c)}</td>"
            for c, a in zip(row, align, strict=True)
        )
        + "</tr>"
        for row in t.rows
    )
    note = f'<p class="tnote">{_inline(t.note)}</p>' if t.note else ""
    return (
        f'<div class="scroll"><table id="table-{html.escape(t.key, quote=True)}">'
        f"<caption>{_inline(t.caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>{note}</div>"
    )


def render_html(blocks: Sequence[Block], figures: Path, title: str) -> str:
    """``figures``: the folder the Figure blocks' PNG files are read from (to inline them)."""
    parts = []
    toc = [b for b in blocks if isinstance(b, Heading) and b.level == 2]
    for b in blocks:
        if isinstance(b, Heading):
            anchor = html.escape(b.anchor, quote=True)
            parts.append(f'<h{b.level} id="{anchor}">{_inline(b.text)}</h{b.level}>')
            if b.level == 1 and toc:
                links = "".join(
                    f'<a href="#{html.escape(h.anchor, quote=True)}">{_inline(h.text)}</a>'
                    for h in toc
                )
                parts.append(f"<nav>{links}</nav>")
        elif isinstance(b, Text):
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Note):
            parts.append(f'<p class="note">{_inline(b.text)}</p>')
        elif isinstance(b, Code):
            parts.append(f"<pre>{html.escape(b.text)}</pre>")
        elif isinstance(b, Table):
            parts.append(_table(b))
        elif isinstance(b, Figure):
            parts.append(_figure(b, figures))
        else:  # pragma: no cover - Block is a closed union
            raise TypeError(f"unknown report block {b!r}")
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        '<link rel="icon" href="data:,">\n'  # no favicon request
        f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
