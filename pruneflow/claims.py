"""Each paper's claim, what a run measured of it, and the verdict read off the intervals.

A method's report module turns its result tables into :class:`Claim` rows (the comparison
behind each row comes from :mod:`pruneflow.stats`). The rows are shown at the top of the
report and at the end of ``pruneflow run``, and written to ``metrics/claims.json`` so that
``dvc metrics diff`` shows a verdict that changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pruneflow.stats import VERDICTS

VERDICT_SCORE = {"reproduced": 1, "inconclusive": 0, "not reproduced": -1}


@dataclass(frozen=True)
class Claim:
    """One claim of one paper as this run tested it.

    ``key`` is a stable identifier (``spdy.vs_uniform``) for the metrics file; ``measured``
    says in one line what the run found, with n, means, intervals and paired differences.
    """

    paper: str
    key: str
    claim: str
    measured: str
    verdict: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.key}: verdict {self.verdict!r} not in {VERDICTS}")


def claims_metrics(claims: list[Claim]) -> dict[str, Any]:
    """``metrics/claims.json``: per claim key its verdict and a number DVC can diff (+1
    reproduced, 0 inconclusive, -1 not reproduced)."""
    return {
        c.key: {"verdict": c.verdict, "score": VERDICT_SCORE[c.verdict], "measured": c.measured}
        for c in claims
    }


def claims_rows(claims: list[Claim]) -> list[dict[str, str]]:
    return [asdict(c) for c in claims]
