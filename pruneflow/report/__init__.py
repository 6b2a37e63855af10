"""The report: every method's Parquet tables -> ``report.md`` + a self-contained ``report.html``.

Small modules, one idea each:
  ``schemas``      the SPDY tables as read: columns and paths (pruneflow.spdy.paths), values
  ``doc``          the report as blocks (headings, text, tables, figures)
  ``render_md``    blocks -> Markdown, figures as relative PNG links
  ``render_html``  blocks -> one HTML page, PNGs inlined, no script or external resource
  ``fmt``          how numbers read (%, ±, 2.00x)
  ``spdy_plots``   SPDY figures the steps do not draw (timing heat map, accuracy vs speedup)
  ``spdy`` / ``sdd`` / ``chex``  one section per method, from its tables
  ``header``       which params were run, which methods ran
  ``build``        :func:`build_report`
"""

from __future__ import annotations

from typing import Any

__all__ = ["ReportPaths", "build_report"]


def __getattr__(name: str) -> Any:
    # lazy: a reader of one submodule (schemas) does not pull in matplotlib
    if name in __all__:
        from pruneflow.report import build

        return getattr(build, name)
    raise AttributeError(f"module 'pruneflow.report' has no attribute {name!r}")
