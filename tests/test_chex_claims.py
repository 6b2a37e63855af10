"""The CHEX claim read off a comparison table: n, means with 95% intervals, paired differences to
CHEX, and the verdict (reproduced / not reproduced / inconclusive); the section's tables."""

import pandas as pd
import pytest

from pruneflow import config
from pruneflow.chex import paths
from pruneflow.config import Params
from pruneflow.io import write_parquet
from pruneflow.report.chex import chex_claims, chex_section
from pruneflow.report.doc import Table
from pruneflow.stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED

FLOPS_DENSE = 4_000_000
BASE = {"chex": 0.960, "l1_norm": 0.950, "slimming": 0.952, "static": 0.958}
SEED_EFFECT = [0.004, -0.003, 0.001]  # shared by every method of a seed: pairing removes it


def _params() -> Params:
    return Params.model_validate({"runtime": {"progress": "off"}})


def _write(p: Params, acc: dict[tuple[str, float], list[float]]) -> None:
    rows = []
    for (method, target), values in acc.items():
        for seed, value in enumerate(values):
            rows.append(
                {
                    "method": method,
                    "flops_reduction_target": target,
                    "flops_reduction": target + 0.002,
                    "seed": seed,
                    "test_acc": value,
                    "val_acc": value,
                    "flops": int(FLOPS_DENSE * (1 - target - 0.002)),
                    "params": 1000,
                }
            )
    write_parquet(
        paths.comparison_table(p),
        pd.DataFrame(rows).astype({"method": object}),
        metadata={"dense_test_acc": [0.97, 0.972, 0.968], "flops_dense": FLOPS_DENSE},
    )


def _table(shift: dict[tuple[str, float], float] | None = None, noise: float = 0.0):
    shift = shift or {}
    wobble = [noise, -noise, 0.5 * noise]
    return {
        (m, t): [
            BASE[m] - (0.02 if t == 0.9 else 0.0) + shift.get((m, t), 0.0) + e + w * (m == "chex")
            for e, w in zip(SEED_EFFECT, wobble, strict=True)
        ]
        for m in BASE
        for t in (0.7, 0.9)
    }


def test_no_comparison_table_no_claim(workdir):
    assert chex_claims(_params()) == []


def test_chex_ahead_of_every_baseline_at_both_targets_is_reproduced(workdir):
    params = _params()
    _write(config.scoped(params, "chex:resnet_mini"), _table())
    (claim,) = chex_claims(params)
    assert claim.verdict == REPRODUCED and claim.key == "chex.resnet_mini.vs_prune_finetune"
    assert "n=3" in claim.measured and "−70% FLOPs" in claim.measured
    assert "− l1_norm +1.00 [+1.00, +1.00]" in claim.measured  # pairing removes the seed effect
    assert "− static +0.20" in claim.measured  # stated, though not part of the verdict


def test_a_baseline_ahead_of_chex_at_one_target_is_not_reproduced(workdir):
    params = _params()
    _write(config.scoped(params, "chex:resnet_mini"), _table({("slimming", 0.9): 0.015}))
    assert chex_claims(params)[0].verdict == NOT_REPRODUCED


def test_static_ahead_of_chex_does_not_decide_the_claim(workdir):
    params = _params()
    _write(config.scoped(params, "chex:resnet_mini"), _table({("static", 0.7): 0.03}))
    (claim,) = chex_claims(params)
    assert claim.verdict == REPRODUCED and "− static -2.80" in claim.measured


def test_differences_inside_the_seed_noise_are_inconclusive(workdir):
    params = _params()
    table = _table({("l1_norm", 0.7): 0.009}, noise=0.006)
    _write(config.scoped(params, "chex:resnet_mini"), table)
    assert chex_claims(params)[0].verdict == INCONCLUSIVE


def test_the_section_table_shows_n_intervals_and_the_paired_difference(workdir):
    params = _params()
    _write(config.scoped(params, "chex:resnet_mini"), _table())
    sec = chex_section(params, workdir / "figures")
    (table,) = [b for b in sec.blocks if isinstance(b, Table) and "comparison" in b.key]
    assert table.columns[2] == "n" and "95% CI" in table.columns[3] and "CHEX −" in table.columns[5]
    dense, *rows = table.rows
    assert dense[:3] == ["0%", "dense", "3"]
    assert len(rows) == 8 and all(r[2] == "3" for r in rows)
    l1 = next(r for r in rows if r[0] == "−70%" and r[1].startswith("L1"))
    assert l1[5] == "+1.00 [+1.00, +1.00]"
    chex = next(r for r in rows if r[0] == "−70%" and r[1] == "CHEX")
    assert chex[3].startswith("96.07 [") and chex[5] == "–"


@pytest.mark.parametrize("missing", ["chex", "l1_norm"])
def test_a_method_that_did_not_run_leaves_the_claim_inconclusive_at_best(workdir, missing):
    params = _params()
    table = {k: v for k, v in _table().items() if k[0] != missing}
    _write(config.scoped(params, "chex:resnet_mini"), table)
    claims = chex_claims(params)
    assert claims[0].verdict in (INCONCLUSIVE, REPRODUCED)
    if missing == "chex":
        assert claims[0].verdict == INCONCLUSIVE
