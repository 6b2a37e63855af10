"""The report's opening: which params were run (file, hash, preset, the knobs that matter)
and which methods ran, with the command that produces those that did not."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from pruneflow.config import Params, SpdyParams
from pruneflow.io import file_hash
from pruneflow.report import fmt
from pruneflow.report.doc import Block, Code, Heading, Table, Text
from pruneflow.report.section import Section

TITLE = "pruneflow report"


def params_hash(params: Params) -> str:
    """A short hash of the validated params (every value, defaults included)."""
    blob = json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


def _source(params_file: Path | None, overrides: Sequence[str]) -> list[str]:
    lines = []
    if params_file is not None:
        if params_file.is_file():
            lines.append(f"params file  {params_file} (content hash {file_hash(params_file)[:16]})")
        else:
            lines.append(f"params file  {params_file} (absent: every value is a default)")
    if overrides:
        lines.append("overrides    " + " ".join(f"--set {o}" for o in overrides))
    return lines


def _floors(per_model: dict[str, float]) -> str:
    return "".join(f" ({m} from {v:g})" for m, v in sorted(per_model.items()))


def _targets(s: SpdyParams) -> str:
    """``2x, 3x``, or per model where a model has its own (``mlp1024 10x, 20x; ...``)."""
    if not s.model_targets:
        return fmt.joined(fmt.target(t) for t in s.targets)
    return "; ".join(
        f"{m} " + fmt.joined(fmt.target(t) for t in s.targets_for(m)) for m in s.models
    )


def _knobs(params: Params) -> list[str]:
    s, d, c = params.spdy, params.sdd, params.chex
    return [
        f"SPDY         models {fmt.joined(s.models)} on {s.dataset}; targets {_targets(s)}; "
        f"grid {s.grid.steps} levels "
        f"{s.grid.min_sparsity:g}..{s.grid.max_sparsity:g}{_floors(s.grid.model_min_sparsity)}; "
        f"seeds: dense training "
        f"{s.train.seed}, search {s.search.seed}, gradual pruning {fmt.joined(s.gmp.seeds)} "
        f"({fmt.joined(s.gmp.profiles)})",
        f"SDD          models {fmt.joined(d.models)} on {d.dataset}, {d.noise_rate:.0%} label "
        f"noise; {fmt.joined(d.methods)} pruning, retraining {fmt.joined(d.modes)}; seeds "
        f"{fmt.joined(d.seeds)}; to {d.final_sparsity:.1%} sparsity",
        f"CHEX         models {fmt.joined(c.models)} on {c.dataset}; FLOPs targets "
        f"{fmt.joined(f'-{t:.0%}' for t in c.compare.targets)}; methods "
        f"{fmt.joined(c.compare.methods)}; seeds {fmt.joined(c.compare.seeds)}; "
        f"{c.train.epochs} epochs",
    ]


def header(
    params: Params,
    sections: Sequence[Section],
    params_file: Path | None = None,
    overrides: Sequence[str] = (),
) -> list[Block]:
    ran = [s.method for s in sections if s.status != "not run"]
    summary = (
        f"Built from the pipeline's Parquet tables alone (`uv run pruneflow report` rebuilds it). "
        f"Methods with results: {fmt.joined(ran) if ran else 'none yet'}."
    )
    params_lines = [
        f"preset       {params.preset} (`preset` in the params file; presets/full.yaml: the "
        "papers' full experiments)",
        *_source(params_file, overrides),
        f"params hash  {params_hash(params)} (of every validated value)",
        *_knobs(params),
    ]
    status = Table(
        "methods",
        "Methods",
        ["method", "status", "tables read", "tables missing", "command that produces them"],
        [
            [
                f"{s.method}",
                s.status,
                str(len(s.found)),
                str(len(s.missing)),
                f"`{s.command}`",
            ]
            for s in sections
        ],
    )
    return [
        Heading(TITLE, 1, "top"),
        Text(summary),
        Code("\n".join(params_lines)),
        status,
    ]
