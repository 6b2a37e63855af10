"""End-to-end speedup of SparseRuntime models at uniform sparsity over the dense model.

    uv run python bench/layer_speedup.py [--models mlp1024 smallcnn resnet18_cifar]
        [--sparsities 0.5 0.8 0.9 0.95] [--threads 1 2]
        [--backends direct_numba csr_numba csr] [--repeats 30]

For every (model, threads, sparsity, backend): every profiled layer (all prunable layers but
the skipped first/last ones) gets an exact random mask of that sparsity and runs on the
backend (a layer the backend cannot run, e.g. a linear layer on ``direct_numba``, on the next
one of ``SparseRuntime``'s fallback order); the dense model and the sparse ones are timed
round-robin (interleaved, so load on the host hits them alike), median of ``--repeats`` runs
each. Speedups are over the dense SparseRuntime (same BN folding, fused ReLUs and pooling,
only the layers' backend differs) and, for reference, over the plain torch eval model.

``--per-layer``: instead, every profiled layer alone on its real input (captured from the
dense model's forward pass), dense against each backend at each sparsity, interleaved, one
thread (``kind: "layer"``; a layer a backend cannot run is reported on its fallback). A layer
with a fused 2x2 max pooling is timed as the runtime runs it, conv+pool (``fused_pool``).

With several ``--threads``, one more line per (model, sparsity, backend) compares the sparse
model's own times across the thread counts, interleaved on the wall clock in one loop
(``kind: "threads"``; ``slowdown_vs_1``: time at each count over the time on one thread).

DeepSparse 1.8 reference for mlp1024 (batch 64, one thread, measured by the project on the
same host): 2.9x at 80%, 4.6x at 90%, 9.6x at 95%; the goal is 0.8x of that.

Inputs: 1x28x28 at the default profiling batch (mlp1024: 64, smallcnn: 16); resnet18_cifar
3x32x32 at batch 8. Prints one JSON object per line; the first line describes the host.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys

import numpy as np
import torch

from pruneflow.models import build
from pruneflow.models.zoo import prunable_layers
from pruneflow.sparsity.grid import skipped_layers
from pruneflow.timing import (
    SparseRuntime,
    build_layer,
    default_batch_size,
    exact_mask,
    get_backend,
    host_description,
    measure_interleaved,
    thread_scope,
)
from pruneflow.timing.runtime import FALLBACK

SHAPES = {"resnet18_cifar": (3, 32, 32)}
BATCH = {"resnet18_cifar": 8}
DEEPSPARSE = {("mlp1024", 0.8): 2.9, ("mlp1024", 0.9): 4.6, ("mlp1024", 0.95): 9.6}


def _runs_on(backend: str, layer: torch.nn.Module) -> str:
    """``backend``, or the first of its fallbacks that can run ``layer``."""
    while backend != "dense" and not get_backend(backend).supports(layer):
        backend = FALLBACK.get(backend, "dense")
    return backend


def _thread_line(name: str, s: float, backend: str, rt: SparseRuntime, x, args) -> None:  # noqa: ANN001
    """The sparse model's times at every thread count, interleaved on the wall clock."""
    counts = sorted(set(args.threads))

    def at(t: int):  # noqa: ANN202
        def run() -> None:
            with thread_scope(t):
                rt(x)

        return run

    with thread_scope(max(counts)), torch.no_grad():  # max threads: the wall clock
        timings = measure_interleaved([at(t) for t in counts], warmup=2, repeats=args.repeats)
    base = timings[0].median_ms
    print(
        json.dumps(
            {
                "kind": "threads",
                "model": name,
                "sparsity": s,
                "backend": backend,
                "sparse_ms": {
                    t: round(tm.median_ms, 4) for t, tm in zip(counts, timings, strict=False)
                },
                "slowdown_vs_1": {
                    t: round(tm.median_ms / base, 3) for t, tm in zip(counts, timings, strict=False)
                },
                "loadavg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )
    sys.stdout.flush()


def _per_layer(name: str, model: torch.nn.Module, pruned: list[str], x, args) -> None:  # noqa: ANN001
    """Every profiled layer alone on its captured input: dense vs each backend."""
    dense = SparseRuntime(model, "dense")
    inputs: dict[str, torch.Tensor] = {}
    hooks = [
        dense.layer(n).register_forward_pre_hook(
            lambda mod, inp, n=n: inputs.__setitem__(n, inp[0].clone())
        )
        for n in pruned
    ]
    dense(x)
    for h in hooks:
        h.remove()
    for n in pruned:
        layer = model.get_submodule(n)
        relu, pool = n in dense.fused_relu, n in dense.fused_pool
        for s in args.sparsities:
            rng = np.random.default_rng([args.seed, int(s * 1e4), pruned.index(n)])
            masked = copy.deepcopy(layer)
            with torch.no_grad():
                masked.weight.mul_(exact_mask(masked.weight.shape, s, rng))
            used = [_runs_on(b, masked) for b in args.backends]
            exes = [build_layer("dense", masked, relu, pool)] + [
                build_layer(b, masked, relu, pool) for b in used
            ]
            xin = inputs[n]
            with thread_scope(1), torch.no_grad():
                timings = measure_interleaved(
                    [lambda e=e, xin=xin: e(xin) for e in exes], warmup=2, repeats=args.repeats
                )
            for asked, b, t in zip(args.backends, used, timings[1:], strict=True):
                print(
                    json.dumps(
                        {
                            "kind": "layer",
                            "model": name,
                            "layer": n,
                            "op": type(layer).__name__,
                            "fused_pool": pool,
                            "input": list(xin.shape),
                            "stride": list(getattr(layer, "stride", ())),
                            "sparsity": s,
                            "backend": asked,
                            "ran_on": b,
                            "dense_ms": round(timings[0].median_ms, 4),
                            "sparse_ms": round(t.median_ms, 4),
                            "speedup": round(timings[0].median_ms / t.median_ms, 3),
                            "loadavg_1m": round(os.getloadavg()[0], 2),
                        }
                    )
                )
                sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mlp1024", "smallcnn", "resnet18_cifar"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.5, 0.8, 0.9, 0.95])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["direct_numba", "csr_numba", "csr"])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-layer", action="store_true", help="time every layer alone")
    args = parser.parse_args()
    print(json.dumps({"host": host_description(1), "loadavg": os.getloadavg()}))
    for name in args.models:
        shape = SHAPES.get(name, (1, 28, 28))
        batch = BATCH.get(name, default_batch_size(name))
        torch.manual_seed(args.seed)
        model = build(name, 10, shape).eval()
        names = prunable_layers(model)
        pruned = [n for n in names if n not in skipped_layers(name, names)]
        x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))
        if args.per_layer:
            _per_layer(name, model, pruned, x, args)
            continue
        dense = SparseRuntime(model, "dense")
        for threads in args.threads:
            for s in args.sparsities:
                rng = np.random.default_rng([args.seed, int(s * 1e4)])
                masks = {n: exact_mask(model.get_submodule(n).weight.shape, s, rng) for n in pruned}
                runtimes = {
                    b: SparseRuntime(
                        model,
                        {n: _runs_on(b, model.get_submodule(n)) for n in pruned},
                        masks=masks,
                    )
                    for b in args.backends
                }
                with thread_scope(threads), torch.no_grad():
                    fns = [dense, model, *runtimes.values()]
                    timings = measure_interleaved(
                        [lambda f=f, x=x: f(x) for f in fns], warmup=2, repeats=args.repeats
                    )
                dense_t, torch_t = timings[0], timings[1]
                for backend, t in zip(runtimes, timings[2:], strict=True):
                    ref = DEEPSPARSE.get((name, s))
                    speedup = dense_t.median_ms / t.median_ms
                    print(
                        json.dumps(
                            {
                                "model": name,
                                "batch_size": batch,
                                "threads": threads,
                                "sparsity": s,
                                "backend": backend,
                                "layer_backends": sorted(set(runtimes[backend].backends.values())),
                                "dense_ms": round(dense_t.median_ms, 4),
                                "torch_dense_ms": round(torch_t.median_ms, 4),
                                "sparse_ms": round(t.median_ms, 4),
                                "sparse_p10_ms": round(t.p10_ms, 4),
                                "sparse_p90_ms": round(t.p90_ms, 4),
                                "speedup": round(speedup, 3),
                                "speedup_vs_torch": round(torch_t.median_ms / t.median_ms, 3),
                                "deepsparse_ref": ref,
                                "goal_met": None if ref is None else bool(speedup >= 0.8 * ref),
                                "loadavg_1m": round(os.getloadavg()[0], 2),
                            }
                        )
                    )
                    sys.stdout.flush()
                if len(set(args.threads)) > 1 and threads == args.threads[0]:
                    for backend, rt in runtimes.items():
                        _thread_line(name, s, backend, rt, x, args)
                del runtimes


if __name__ == "__main__":
    main()
