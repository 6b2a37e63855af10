"""Does the search's calibration loss rank width profiles as fine-tuning does?

    uv run python bench/structured_scoring.py --model resnet_mini
        [--params presets/structured.yaml] [--set key=value ...]

Run after ``structured_compare`` (same ``--params``/``--set`` as the pipeline; the runs done
so far count). For each
target and each profile built from the structured database (``search`` and ``uniform``: the
same keep sets and refits, so only the allocation differs), it scores the stitched model
(:class:`pruneflow.structured.search.WidthLoss`) three ways and sets the scores beside the
test accuracy the comparison measured after fine-tuning (mean over seeds):

- ``search_score``: the search's own score (``structured.score_split``: the validation split
  by default), cross-entropy with BatchNorm on the batches' statistics
  (``structured.search.bn``);
- ``calib_loss``: the same on the calibration images the refit was fitted on (the search's
  score before ``score_split: val``);
- ``heldout_loss``: the same on test images the refit never saw (the refit's optimism);
- ``eval_bn_loss``: on the calibration images with the dense model's running BatchNorm
  statistics (what the stitched model computes before any recalibration);
- ``short_finetune_loss``: the search's score images after the first
  ``structured.search.finetune_steps`` steps of the comparison's fine-tuning of the thinned
  model (:class:`pruneflow.structured.search.FinetunedLoss`, what the search now chooses its
  best ``finetune_top_k`` profiles by).

One JSON object per line; the first one the host and its load.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import torch

from pruneflow import config
from pruneflow.io import read_parquet
from pruneflow.steps.structured import (
    _calibration,
    _dense_inputs,
    _open,
    _scoring_batches,
    _short_finetune,
)
from pruneflow.steps.structured_compare import compare_items
from pruneflow.structured import paths
from pruneflow.structured.search import WidthLoss
from pruneflow.timing.table import bench_host


def _batches(
    x: torch.Tensor, y: torch.Tensor, size: int = 128
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--params", default="presets/structured.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    p = config.scoped(config.load(args.params, args.overrides), f"structured:{args.model}")
    print(json.dumps({"host": bench_host()}), flush=True)
    data, train_idx, test_idx, true, model, example = _dense_inputs(p)
    groups, _, db = _open(p, model, example)
    calib = _calibration(p, data, train_idx, true)
    keep = p.structured.search.calib_samples or sum(len(b[1]) for b in calib)
    xc = torch.cat([b[0] for b in calib])[:keep]
    yc = torch.cat([b[1] for b in calib])[:keep]
    held = np.sort(test_idx)[:keep]
    xh, yh = data.images(held), torch.as_tensor(true[held], dtype=torch.long)
    scoring = _scoring_batches(p, data, train_idx, true)
    xs = torch.cat([b[0] for b in scoring])[:keep]
    ys = torch.cat([b[1] for b in scoring])[:keep]
    search_score = WidthLoss(model, groups, db, _batches(xs, ys), bn=p.structured.search.bn)
    scored = WidthLoss(model, groups, db, _batches(xc, yc), bn=p.structured.search.bn)
    heldout = WidthLoss(model, groups, db, _batches(xh, yh), bn=p.structured.search.bn)
    eval_bn = WidthLoss(model, groups, db, _batches(xc, yc), bn="eval")
    short = _short_finetune(
        p, model, groups, db, example, (data, train_idx, true), _batches(xs, ys)
    )
    plans = read_parquet(paths.plans_table(p), paths.PLAN_COLUMNS)
    profiles = read_parquet(paths.profiles_table(p), paths.PROFILE_COLUMNS)
    # the fine-tuned runs done so far (the report needs them all; this reads what exists)
    done_items = [paths.run_record(p, i) for i in compare_items(p)]
    runs = pd.DataFrame(
        [json.loads(f.read_text()) for f in done_items if f.exists()],
        columns=list(paths.COMPARISON_COLUMNS),
    )
    n_groups = len(groups)
    for target in p.structured.targets:
        uniform = profiles[(profiles["method"] == "uniform") & (profiles["target"] == target)]
        candidates = {
            "dense": [0] * n_groups,
            "search": json.loads(plans[plans["target"] == target].iloc[0]["levels"]),
            "uniform": [int(uniform.iloc[0]["budget"])] * n_groups,
        }
        for method, levels in candidates.items():
            done = runs[(runs["method"] == method) & (runs["target"] == target)]
            print(
                json.dumps(
                    {
                        "model": args.model,
                        "target": target,
                        "profile": method,
                        "widths": [int(db_w) for db_w in _widths(db, groups, levels)],
                        "search_score": round(search_score(levels), 4),
                        "score_split": p.structured.score_split,
                        "calib_loss": round(scored(levels), 4),
                        "heldout_loss": round(heldout(levels), 4),
                        "eval_bn_loss": round(eval_bn(levels), 4),
                        "short_finetune_loss": (
                            round(short(levels), 4) if short is not None else None
                        ),
                        "finetune_steps": p.structured.search.finetune_steps,
                        "finetuned_acc": (
                            round(float(done["test_acc"].mean()), 4) if len(done) else None
                        ),
                        "seeds": len(done),
                    }
                ),
                flush=True,
            )


def _widths(db, groups, levels) -> list[int]:  # noqa: ANN001
    masks = db.masks({g.name: g.size for g in groups}, levels)
    return [int(masks[g.name].sum()) for g in groups]


if __name__ == "__main__":
    main()
