"""The report's "Claims" section: per paper, the claim, what this run measured, the verdict.

It opens the report and ends ``pruneflow run``'s output; ``metrics/claims.json`` carries the
verdicts for ``dvc metrics diff``. Each method's section module says how its tables become
claims (``spdy_claims`` and its siblings); this module only gathers and lays them out.
"""

from __future__ import annotations

from pathlib import Path

from pruneflow.claims import Claim
from pruneflow.config import Params
from pruneflow.report.chex import chex_claims
from pruneflow.report.doc import Block, Heading, Note, Table
from pruneflow.report.sdd import sdd_claims
from pruneflow.report.spdy import spdy_claims


def claims_file(params: Params) -> Path:
    """``metrics/claims.json``: every claim's verdict (one file for the whole run)."""
    return Path(params.paths.metrics) / "claims.json"


# what the report and `pruneflow run` say instead of a verdict where ``claims`` is off
NO_CLAIMS = (
    "This run makes no claims (params: claims: false, as the smoke preset sets it): its "
    "settings are too small for a verdict."
)


def all_claims(params: Params) -> list[Claim]:
    """Every paper's claims that this run's tables can answer, in the report's order (none
    where ``params.claims`` is off)."""
    if not params.claims:
        return []
    return [*spdy_claims(params), *sdd_claims(params), *chex_claims(params)]


CLAIMS_COLUMNS = ["paper", "claim", "this run measured", "verdict"]


def claims_blocks(claims: list[Claim], made: bool = True) -> list[Block]:
    """The Claims section; ``made`` False (``params.claims`` off) says that none are made."""
    heading = Heading("Claims", 2, "claims")
    if not made:
        return [heading, Note(NO_CLAIMS)]
    if not claims:
        return [heading, Note("No method has produced the results a claim is read from yet.")]
    rows = [[c.paper, c.claim, c.measured, c.verdict] for c in claims]
    note = (
        "Verdicts are read off 95% intervals: reproduced when the interval lies wholly on the "
        "claimed side, not reproduced when it lies wholly on the other, inconclusive otherwise."
    )
    return [
        heading,
        Table(
            "claims",
            "Each paper's claim against this run",
            CLAIMS_COLUMNS,
            rows,
            note=note,
            numeric=[False] * 4,
        ),
    ]
