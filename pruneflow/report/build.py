"""``build_report``: read the pipeline's Parquet tables, write report.md, report.html and their
figures, each atomically (a failed build leaves the previous report as it was)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pruneflow import layout
from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.io import atomic_path
from pruneflow.report.chex import chex_section
from pruneflow.report.claims import all_claims, claims_blocks
from pruneflow.report.header import TITLE, header
from pruneflow.report.render_html import render_html
from pruneflow.report.render_md import render_markdown
from pruneflow.report.sdd import sdd_section
from pruneflow.report.spdy import spdy_section
from pruneflow.report.structured import structured_section

FIGURES = "figures"


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    html: Path
    figures: Path  # the folder of the PNGs report.md links to

    def __iter__(self) -> Iterator[Path]:
        return iter((self.markdown, self.html))


@contextlib.contextmanager
def _writing(final: Path) -> Iterator[Path]:
    """:func:`atomic_path`, with the OS errors it lets through (a read-only folder refuses the
    temporary file before it exists) turned into one-line errors naming ``final``."""
    try:
        with atomic_path(final) as tmp:
            yield tmp
    except PruneflowError:
        raise
    except OSError as exc:
        raise PruneflowError(f"cannot write {final}: {exc.strerror or exc}") from exc


def _write_text(path: Path, text: str) -> None:
    with _writing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def build_report(
    params: Params,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    params_file: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
) -> ReportPaths:
    """Build the report from the Parquet tables the pipeline wrote for ``params``.

    ``out_dir`` defaults to ``artifacts/reports``; ``params_file`` and ``overrides`` are only
    described in the report's header. A method whose tables are absent is reported as not run;
    a corrupt or mismatched table is a :class:`PruneflowError` naming the file.
    """
    out = Path(out_dir) if out_dir is not None else layout.reports_dir(params)
    paths = ReportPaths(out / "report.md", out / "report.html", out / FIGURES)
    with _writing(paths.figures) as figures:
        figures.mkdir()
        sections = [
            spdy_section(params, figures),
            sdd_section(params, figures),
            chex_section(params, figures),
            structured_section(params, figures),
        ]
        source = Path(params_file) if params_file is not None else None
        blocks = header(params, sections, source, overrides)
        blocks += claims_blocks(all_claims(params), made=params.claims)
        blocks += [block for section in sections for block in section.blocks]
        markdown = render_markdown(blocks, FIGURES)
        page = render_html(blocks, figures, TITLE)
    _write_text(paths.markdown, markdown)
    _write_text(paths.html, page)
    return paths
