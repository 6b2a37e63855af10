"""Two fan-out items side by side, as the thread runner runs them: torch threads per item and
OpenMP's wait policy.

    uv run python bench/item_threads.py [--epochs 2] [--rounds 2]

Each configuration runs in its own process (OpenMP reads its wait policy once, when torch
loads): two CHEX comparison runs of the default params (resnet_mini on mnist5k: ``static`` at
-90% FLOPs and ``l1_norm`` at -70%, ``--epochs`` each) on two threads of one process, with
``threads`` torch threads each, waiting ``spin`` (libgomp's default) or ``passive``, and the
same two runs one after the other on one thread (what side by side must beat: the training
loops hold the GIL between torch calls). Rounds alternate the configurations. One JSON line
per run: wall seconds for both items, the process's CPU seconds, the host load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# (torch threads per item, OpenMP wait policy, items side by side or one after the other)
CONFIGS = [(2, "spin", True), (2, "passive", True), (1, "passive", True), (1, "passive", False)]


def _child(threads: int, epochs: int, side_by_side: bool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from pruneflow import config
    from pruneflow.chex.methods import run_method
    from pruneflow.steps import STEPS
    from pruneflow.steps.chex import _setup

    p = config.scoped(
        config.load(REPO / "params.yaml", [f"chex.train.epochs={epochs}", "chex.t_max=1"]),
        "chex:resnet_mini",
    )
    STEPS["prepare"].run(p)  # the data set's labels table (cached after the first run)
    data, split = _setup(p)

    def item(method_target: tuple[str, float]) -> float:
        torch.set_num_threads(threads)  # per thread, as each step's configure() does
        run_method(
            method_target[0], p.model.name, data, split, p.train, p.chex, method_target[1], 0
        )
        return 0.0

    wall, cpu = time.perf_counter(), time.process_time()
    runs = [("static", 0.9), ("l1_norm", 0.7)]
    if side_by_side:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(item, runs))
    else:
        for run in runs:
            item(run)
    print(json.dumps({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--one-after-the-other", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.epochs, not args.one_after_the_other)
        return
    for r in range(args.rounds):
        for threads, wait, side_by_side in CONFIGS if r % 2 == 0 else CONFIGS[::-1]:
            env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE" if wait == "spin" else "PASSIVE"}
            cmd = [sys.executable, __file__, "--child", str(threads), "--epochs", str(args.epochs)]
            cmd += [] if side_by_side else ["--one-after-the-other"]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            figure = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps({
                "bench": "item_threads", "threads_per_item": threads, "wait": wait,
                "side_by_side": side_by_side,
                "round": r, **{k: round(v, 2) for k, v in figure.items()},
                "load": round(os.getloadavg()[0], 2), "nproc": os.cpu_count(),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
