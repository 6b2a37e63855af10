"""How long must gradual pruning be? Accuracy of one profile against the pruning schedule's length.

    uv run python bench/gmp_length.py [--params params.yaml] [--set key=value ...]
        [--model smallcnn_w16] [--target T] [--profile uniform] [--seeds 0]
        [--lengths 0.5:0.5 1:0.5 2:1 3:1 5:2]

Each length ``P:F`` is ``P`` epochs of pruning (``spdy.gmp.end_epoch``, cubic schedule from
``spdy.gmp.start_epoch``) followed by ``F`` epochs of fine-tuning with the masks fixed
(``spdy.gmp.finetune_epochs``); every other knob comes from the params and ``--set``. Every run
goes through the pipeline's own ``spdy_gmp`` step (so it needs the profiles of ``pruneflow run
spdy``, and its results land in the step cache: the pipeline reuses the run whose length it
picks). The target defaults to the highest of ``spdy.targets``: where the profiles lose the
most, so where the schedule's length matters most.

One JSON line per (length, seed): ``test_acc`` and the run's epochs; then one per length with
the mean over seeds. The default schedule should sit past the curve's knee, not at it.
"""

from __future__ import annotations

import argparse
import json
import time

from pruneflow import config
from pruneflow.checkpoint import sidecar
from pruneflow.errors import PruneflowError
from pruneflow.io import read_json
from pruneflow.steps.spdy_gmp import SPDY_GMP, run_checkpoint


def _length(text: str) -> tuple[float, float]:
    """``"6:2"`` -> (6.0, 2.0): epochs of pruning, then of fine-tuning (``"6"``: no fine-tuning)."""
    prune, _, finetune = text.partition(":")
    try:
        return float(prune), float(finetune or 0.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a length is PRUNE[:FINETUNE] epochs, got {text!r}"
        ) from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--model", default=None, help="default: the first of spdy.models")
    ap.add_argument("--target", type=float, default=None)
    ap.add_argument("--profile", default="uniform")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--lengths",
        nargs="+",
        type=_length,
        default=[(0.5, 0.5), (1.0, 0.5), (2.0, 1.0), (3.0, 1.0), (5.0, 2.0)],
    )
    args = ap.parse_args()
    base = config.load(args.params, args.overrides)
    model = args.model or base.spdy.models[0]
    target = args.target if args.target is not None else max(base.spdy.targets)
    for prune, finetune in args.lengths:
        run = {
            "model": model,
            "target": target,
            "profile": args.profile,
            "prune_epochs": prune,
            "finetune_epochs": finetune,
        }
        accs = []
        for seed in args.seeds:
            overrides = [
                *args.overrides,
                f"spdy.gmp.end_epoch={prune}",
                f"spdy.gmp.finetune_epochs={finetune}",
                f"spdy.gmp.seeds=[{seed}]",
            ]
            p = config.scoped(config.load(args.params, overrides), f"spdy:{model}")
            item = {"target": float(target), "profile": args.profile, "seed": seed}
            started = time.perf_counter()
            record = SPDY_GMP.run(p, item=item)
            acc = float(read_json(sidecar(run_checkpoint(p, item)))["test_acc"])
            accs.append(acc)
            seconds = round(time.perf_counter() - started, 1)
            figure = {
                **run,
                "seed": seed,
                "test_acc": acc,
                "status": record["status"],
                "seconds": seconds,
            }
            print(json.dumps(figure), flush=True)
        summary = {**run, "seeds": len(accs), "mean_test_acc": sum(accs) / len(accs)}
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    try:
        main()
    except PruneflowError as exc:  # bad params, a missing profile: one line
        raise SystemExit(f"error: {exc}") from None
