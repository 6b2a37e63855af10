"""Training-step time of a model on oneDNN (channels-last) against torch's native kernels.

    uv run python bench/train_step.py [--models resnet_mini smallcnn] [--batch 128]
        [--threads 1] [--steps 5] [--rounds 3]

For every model: one SGD step (forward, cross-entropy, backward, update) on a fixed random
batch of 1x28x28 images, timed as the median over ``--rounds`` alternating rounds of
``--steps`` steps in each mode, after two warm-up steps, so load on the host hits both modes
alike. oneDNN runs with the model and batch channels-last, as :func:`pruneflow.train.train`
runs a model :func:`pruneflow.memory_format.onednn_trains_safely` accepts; the figure for a
model it does not accept is still printed, marked ``"onednn_safe": false``.

Prints one JSON object per line; the first describes the host.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

from pruneflow import memory_format
from pruneflow.models import build
from pruneflow.timing import host_description, thread_scope


def step_ms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def one() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(2):
        one()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet_mini", "smallcnn"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    print(json.dumps({"host": host_description(args.threads), "loadavg": os.getloadavg()}))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (args.batch,), generator=generator)
    with thread_scope(args.threads):
        for name in args.models:
            model = build(name, 10, (1, 28, 28)).train()
            times: dict[str, list[float]] = {"native": [], "onednn": []}
            for _ in range(args.rounds):
                for mode in times:
                    torch.backends.mkldnn.enabled = mode == "onednn"
                    m, xx = copy.deepcopy(model), x
                    if mode == "onednn":
                        m = m.to(memory_format=torch.channels_last)
                        xx = memory_format.as_channels_last(x)
                    times[mode].append(step_ms(m, xx, y, args.steps))
            torch.backends.mkldnn.enabled = True
            native, onednn = (statistics.median(times[k]) for k in ("native", "onednn"))
            print(
                json.dumps(
                    {
                        "model": name,
                        "batch": args.batch,
                        "threads": args.threads,
                        "native_ms": round(native, 1),
                        "onednn_ms": round(onednn, 1),
                        "onednn_speedup": round(native / onednn, 2),
                        "onednn_safe": memory_format.onednn_trains_safely(model),
                    }
                )
            )


if __name__ == "__main__":
    main()
