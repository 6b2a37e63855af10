"""What the runtime's fusions buy end to end: the same sparse model with each one switched off,
timed round-robin in one process.

    OMP_NUM_THREADS=1 uv run python bench/runtime_fusions.py [--model smallcnn]
        [--sparsities 0.8 0.9 0.95 0.99] [--repeats 40] [--seed 0]

Every profiled layer gets an exact random mask of the sparsity and runs on ``direct_numba``
(convolutions) or ``csr_numba`` (linear layers), as ``bench/layer_speedup.py`` does. Variants,
interleaved with the dense ``SparseRuntime`` on one thread, median of ``--repeats`` runs:

- ``base``: no 2x2 max pooling fused into a convolution, no convolution writing into the
  next one's operand, torch's transposing copy in front of a linear layer (the runtime before
  these three);
- ``pool``: pooling fused;
- ``pool_chain``: pooling fused, convolutions chained;
- ``transpose``: also the linear layers' own transposing copy;
- ``unaligned``: also the stem convolution on the direct kernel, writing into conv2's operand,
  and the kernels called through their entry points (see ``runtime.dense_backend`` and
  ``kernels.compiled``); the variants before it run the stem on torch and call the kernels
  through numba's dispatcher;
- ``all``: the runtime as it is, also the direct convolutions on the aligned layout where
  they take it (``direct_conv._MAX_ALIGN_WASTE``); the variants before it never do.

The variants are built by switching the runtime's private passes off, which is why this lives
in bench/ only. Prints one JSON line per sparsity; the first line describes the host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator

import numpy as np
import torch

import pruneflow.timing.direct_conv as direct_conv
import pruneflow.timing.runtime as runtime
from pruneflow.models import build
from pruneflow.models.zoo import prunable_layers
from pruneflow.sparsity.grid import skipped_layers
from pruneflow.timing import (
    SparseRuntime,
    bench_host,
    default_batch_size,
    exact_mask,
    kernels,
    measure_interleaved,
    thread_scope,
)

VARIANTS = ("base", "pool", "pool_chain", "transpose", "unaligned", "all")


@contextlib.contextmanager
def _switched_off(pool: bool, chain: bool, stem: bool, aligned: bool) -> Iterator[None]:
    fuse, chained = runtime._fuse_pooling, runtime._chained_convolutions
    dense_backend, compiled = runtime.dense_backend, kernels.compiled
    waste = direct_conv._MAX_ALIGN_WASTE
    if aligned:
        direct_conv._MAX_ALIGN_WASTE = 0.0
    if pool:
        runtime._fuse_pooling = lambda *a, **k: {}
    if chain:
        runtime._chained_convolutions = lambda *a, **k: {}
    if stem:  # the stem on torch, every kernel call through numba's dispatcher
        runtime.dense_backend = lambda layer: "dense"
        kernels.compiled = lambda kernel, args: kernel
    try:
        yield
    finally:
        runtime._fuse_pooling, runtime._chained_convolutions = fuse, chained
        runtime.dense_backend, kernels.compiled = dense_backend, compiled
        direct_conv._MAX_ALIGN_WASTE = waste


def _torch_transpose(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with the linear layers' own transposing copy switched off."""
    fits = kernels.transpose_fits_l1

    def run() -> object:
        kernels.transpose_fits_l1 = lambda rows, cols: False
        try:
            return fn()
        finally:
            kernels.transpose_fits_l1 = fits

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smallcnn")
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.8, 0.9, 0.95, 0.99])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    print(json.dumps({"host": bench_host()}))
    torch.manual_seed(args.seed)
    model = build(args.model, 10, (1, 28, 28)).eval()
    names = prunable_layers(model)
    pruned = [n for n in names if n not in skipped_layers(args.model, names)]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(default_batch_size(args.model), 1, 28, 28, generator=gen)
    with _switched_off(False, False, True, False):  # the dense runtime as before the stem rule
        dense = SparseRuntime(model, "dense")
    for s in args.sparsities:
        rng = np.random.default_rng([args.seed, int(s * 1e4)])
        masks = {n: exact_mask(model.get_submodule(n).weight.shape, s, rng) for n in pruned}
        backends = {
            n: "direct_numba"
            if isinstance(model.get_submodule(n), torch.nn.Conv2d)
            else "csr_numba"
            for n in pruned
        }
        rts = {}
        offs = [(1, 1, 1, 1), (0, 1, 1, 1), (0, 0, 1, 1), (0, 0, 1, 1), (0, 0, 0, 1), (0, 0, 0, 0)]
        for variant, off in zip(VARIANTS, offs, strict=True):
            # built and first called (where the kernels' entry points are resolved) under it
            with _switched_off(*map(bool, off)), thread_scope(1), torch.no_grad():
                rts[variant] = SparseRuntime(model, backends, masks=masks)
                rts[variant](x)
        fns = {v: (lambda rt=rt: rt(x)) for v, rt in rts.items()}
        for v in ("base", "pool", "pool_chain"):
            fns[v] = _torch_transpose(fns[v])
        with torch.no_grad():
            ref = fns["base"]()
            for v in VARIANTS[1:]:
                torch.testing.assert_close(fns[v](), ref, rtol=1e-4, atol=1e-4)
        with thread_scope(1), torch.no_grad():
            timings = measure_interleaved(
                [lambda: dense(x), *fns.values()], warmup=3, repeats=args.repeats
            )
        dense_ms = timings[0].median_ms
        ms = {v: t.median_ms for v, t in zip(VARIANTS, timings[1:], strict=True)}
        line = {
            "model": args.model,
            "sparsity": s,
            "dense_ms": round(dense_ms, 3),
            "sparse_ms": {v: round(t, 3) for v, t in ms.items()},
            "speedup": {v: round(dense_ms / t, 2) for v, t in ms.items()},
            "all_over_base": round(ms["base"] / ms["all"], 3),
            "all_over_transpose": round(ms["transpose"] / ms["all"], 3),
            "all_over_unaligned": round(ms["unaligned"] / ms["all"], 3),
            "p10_ms": {v: round(t.p10_ms, 3) for v, t in zip(VARIANTS, timings[1:], strict=True)},
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(line))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
