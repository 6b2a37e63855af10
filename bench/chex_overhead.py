"""CHEX training wall time over plain dense training of the same model, data and epochs.

Both runs use the same loop (pruneflow.train.train with the recipe's random shifts), recipe and
seed; CHEX adds its hook as the loop's ``on_step`` (holding masked channels after every step,
and the prune/regrow steps with their eigendecompositions every Delta_T iterations up to
T_max). Runs alternate dense/CHEX so a
neighbour's load hits both alike; the hook's own time is measured too, which is the overhead
free of that noise. Prints one JSON line.

``--methods`` times instead one short run of every method of the comparison at every target
(seconds per epoch, one JSON line each, with its ratio to dense), and projects the default
comparison's cost from them: every ``chex_compare`` item plus ``chex_train``, run one after
the other (the flow runs items concurrently, so its wall time is lower on more cores).

    uv run python bench/chex_overhead.py                # params.yaml's chex section
    uv run python bench/chex_overhead.py --epochs 4 --repeats 2
    nice -n 5 uv run python bench/chex_overhead.py --methods --epochs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from pruneflow import config
from pruneflow.chex.arch import build_model
from pruneflow.chex.baselines import uniform_counts
from pruneflow.chex.explore import ChexExplorer
from pruneflow.chex.methods import Split, explore_settings, run_method
from pruneflow.config import Params
from pruneflow.data import load_dataset
from pruneflow.runtime import configure
from pruneflow.steps.data import build_labels
from pruneflow.train import train


class TimedHook:
    """The explorer's hook, timing itself."""

    def __init__(self, explorer: ChexExplorer):
        self.explorer = explorer
        self.seconds = 0.0

    def __call__(self, iteration: int, optimizer: torch.optim.Optimizer) -> None:
        start = time.perf_counter()
        self.explorer.after_step(iteration, optimizer)
        self.seconds += time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet_mini")
    ap.add_argument("--epochs", type=int, default=None, help="default: chex.train.epochs")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", action="store_true", help="seconds per epoch of every method")
    args = ap.parse_args()
    configure(args.threads, True)
    p = config.load("params.yaml", [])
    if args.methods:
        per_method(p, args.model, args.epochs or 2)
        return
    if args.epochs is not None:
        ratio = args.epochs / p.chex.train.epochs
        p = config.updated(
            p,
            chex={
                "train": {**p.chex.train.model_dump(), "epochs": args.epochs},
                "t_max": p.chex.t_max * ratio,
                "delta_t": p.chex.delta_t * ratio,
            },
        )
    p = config.scoped(p, f"chex:{args.model}")
    data = load_dataset(p.data.dataset, p.data.root)
    split = Split.from_frame(build_labels(p, data))
    cfg, chex = p.train, p.chex
    example = data.images(split.train[:2])

    # warm-up: the first training steps of a process pay one-off kernel and allocator set-up
    warm = cfg.model_copy(update={"epochs": 1})
    model = build_model(args.model, data.num_classes, data.in_shape, cfg.seed)
    train(model, data, split.train[: 4 * cfg.batch_size], split.labels, warm, shift=chex.shift)

    dense_s, chex_s, hook_s, events = [], [], [], 0
    for _ in range(args.repeats):
        model = build_model(args.model, data.num_classes, data.in_shape, cfg.seed)
        start = time.perf_counter()
        train(model, data, split.train, split.labels, cfg, shift=chex.shift)
        dense_s.append(time.perf_counter() - start)

        model = build_model(args.model, data.num_classes, data.in_shape, cfg.seed)
        start = time.perf_counter()
        explorer = ChexExplorer(model, example, explore_settings(chex, cfg, split.train.size))
        hook = TimedHook(explorer)
        train(model, data, split.train, split.labels, cfg, shift=chex.shift, on_step=hook)
        chex_s.append(time.perf_counter() - start)
        hook_s.append(hook.seconds)
        events = explorer.n_steps
    dense, total, hook = (statistics.median(v) for v in (dense_s, chex_s, hook_s))
    print(
        json.dumps(
            {
                "bench": "chex_overhead",
                "model": args.model,
                "dataset": p.data.dataset,
                "epochs": cfg.epochs,
                "prune_regrow_steps": events,
                "threads": args.threads,
                "repeats": args.repeats,
                "dense_s": round(dense, 2),
                "chex_s": round(total, 2),
                "ratio": round(total / dense, 3),
                "hook_s": round(hook, 3),
                "ratio_from_hook_time": round((dense + hook) / dense, 3),
                "goal": "<= 1.15",
            }
        )
    )


def per_method(p: Params, model: str, epochs: int) -> None:
    """Seconds per training epoch of every method at every target, and the projected cost of
    the default comparison (params.yaml's epochs) run item after item."""
    from pruneflow.steps.chex import compare_items

    full = config.scoped(p, f"chex:{model}")
    default_epochs = full.train.epochs
    scale = epochs / default_epochs
    short = config.updated(
        p,
        chex={
            "train": {**p.chex.train.model_dump(), "epochs": epochs},
            "t_max": p.chex.t_max * scale,
            "delta_t": min(p.chex.delta_t * scale, p.chex.t_max * scale),
        },
    )
    q = config.scoped(short, f"chex:{model}")
    data = load_dataset(q.data.dataset, q.data.root)
    split = Split.from_frame(build_labels(q, data))
    compare = q.chex.compare
    runs = [("dense", 0.0)] + [(m, t) for t in compare.targets for m in compare.methods]
    # warm-up: the first FLOPs count of a process pays seconds of one-off set-up
    dense_model = build_model(model, data.num_classes, data.in_shape, 0)
    uniform_counts(dense_model, data.images(split.train[:2]), compare.targets[0], 0.1)
    per_epoch = {}
    for method, target in runs:
        start = time.perf_counter()
        run_method(method, model, data, split, q.train, q.chex, target, q.train.seed)
        per_epoch[(method, target)] = (time.perf_counter() - start) / epochs
    dense = per_epoch[("dense", 0.0)]
    for (method, target), seconds in per_epoch.items():
        print(
            json.dumps(
                {
                    "bench": "chex_method_epoch",
                    "model": model,
                    "method": method,
                    "target": target,
                    "epochs": epochs,
                    "s_per_epoch": round(seconds, 3),
                    "ratio_to_dense": round(seconds / dense, 3),
                }
            )
        )
    items = compare_items(full)
    projected = default_epochs * (
        per_epoch[("chex", full.chex.flops_reduction)]
        if ("chex", full.chex.flops_reduction) in per_epoch
        else dense
    )
    projected += sum(
        default_epochs * per_epoch[(i["method"], float(i["target"]))]
        for i in items
        if not i.get("variant")
    )
    print(
        json.dumps(
            {
                "bench": "chex_default_projection",
                "model": model,
                "epochs": default_epochs,
                "runs": len(items) + 1,
                "dense_epoch_equivalents": round(projected / dense, 1),
                "projected_serial_s": round(projected, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
