"""pruneflow's SparseRuntime and DeepSparse side by side: same weights, same input, one process.

    uv run python bench/vs_deepsparse.py --build-venv ~/.cache/pruneflow/deepsparse-venv
        [--venv DIR] [--models mlp1024 smallcnn] [--threads 1 2] [--rounds 5] [--repeats 20]
        [--batch 64]

DeepSparse (``deepsparse==1.8.0``, ``onnx==1.14.1``, ``numpy<2``) lives in its own venv,
outside the checkout, so that the project's environment never gets it: ``--build-venv DIR``
creates that venv with Python 3.11 (``python3.11`` or ``python3``) and installs the three
packages into it unless DIR already has them; ``--venv DIR`` uses an existing one. DeepSparse
runs there as a subprocess (bench/deepsparse_worker.py). Where it cannot (no venv given, the
install fails, DeepSparse does not run on this CPU) the bench prints one line saying why and
times pruneflow alone.

Per model (random weights from ``--seed``; smallcnn's BatchNorm statistics random too, so
folding them matters) and sparsity (mlp1024: 80/90/95/98%, smallcnn: 80/90/95%): every
prunable layer but the skipped first and last gets a magnitude mask of that sparsity
(layer-wise); the masked model goes to both engines. DeepSparse gets it as ONNX with BN folded
into the convolutions (so it sees Conv+Relu, as pruneflow does after its own folding);
pruneflow runs its :class:`~pruneflow.timing.SparseRuntime` with each layer on the backend the
profiler finds fastest at that sparsity (``profile_model`` then ``SparseRuntime.from_table``,
as SPDY does, so every registered backend competes). Dense baselines: the unpruned model in
torch, in pruneflow's dense SparseRuntime, and in DeepSparse.

Before timing, both engines' logits on the same batch must agree with torch's (``--atol``,
``--rtol``); a mismatch stops the bench. Timing is wall clock for both (DeepSparse runs on
threads of its own), ``--rounds`` rounds alternating the engines (who goes first alternates
too), ``--repeats`` runs each per round; figures are medians over all runs, with the range of
the per-round medians beside. One JSON line per figure; the first describes the host.
``speed_vs_deepsparse`` is DeepSparse's median over pruneflow's: above 1, pruneflow is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
WORKER = HERE / "deepsparse_worker.py"
DEEPSPARSE_PACKAGES = ("deepsparse==1.8.0", "onnx==1.14.1", "numpy<2")
SPARSITIES = {"mlp1024": (0.8, 0.9, 0.95, 0.98), "smallcnn": (0.8, 0.9, 0.95)}
IN_SHAPE = (1, 28, 28)
OPSET = 17


def emit(figure: str, **values: Any) -> None:
    print(json.dumps({"bench": "vs_deepsparse", "figure": figure, **values}), flush=True)


class DeepSparseUnavailable(Exception):
    """Why DeepSparse cannot run here, in one line."""


# --- the model both engines run -------------------------------------------------------------


def bench_model(name: str, seed: int) -> nn.Module:
    """The zoo model with random weights; random BN statistics, so folding them is not a no-op."""
    from pruneflow.models import build

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the zoo's initialisers draw from torch's default generator
    model = build(name, 10, IN_SHAPE).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                mod.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                mod.weight.copy_(0.8 + 0.4 * torch.rand(c, generator=gen))
                mod.bias.copy_(0.1 * torch.randn(c, generator=gen))
    return model


def magnitude_masks(model: nn.Module, name: str, sparsity: float) -> dict[str, torch.Tensor]:
    """Layer-wise magnitude masks on every prunable layer but the skipped first/last."""
    from pruneflow.models.zoo import prunable_layers
    from pruneflow.sparsity.grid import skipped_layers
    from pruneflow.sparsity.masks import magnitude_scores, select

    names = prunable_layers(model)
    pruned = [n for n in names if n not in skipped_layers(name, names)]
    return select(magnitude_scores(model, pruned), sparsity, scope="layerwise")


def masked_copy(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    import copy

    from pruneflow.sparsity.masks import apply

    out = copy.deepcopy(model).eval()
    apply(out, masks)
    for mod in out.modules():  # weights with the zeros written in, no prune reparametrisation
        if hasattr(mod, "weight_orig"):
            torch.nn.utils.prune.remove(mod, "weight")
    return out


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval copy with every BatchNorm that directly follows a Conv2d folded into it."""
    from torch.fx.experimental.optimization import fuse

    return fuse(model.eval(), inplace=False)


def export_folded_onnx(model: nn.Module, path: Path) -> Path:
    """``model`` with BN folded, as ONNX (Conv/Gemm + Relu): what DeepSparse compiles."""
    from pruneflow.export.onnx import export_onnx

    return export_onnx(fold_batchnorm(model), IN_SHAPE, path, OPSET)


# --- DeepSparse in its own venv ---------------------------------------------------------------


def _python311() -> str | None:
    for exe in ("python3.11", "python3"):
        path = shutil.which(exe)
        if path is None:
            continue
        probe = subprocess.run(
            [path, "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
            capture_output=True,
            text=True,
        )
        if probe.stdout.strip() == "True":
            return path
    return None


def _has_deepsparse(python: Path) -> bool:
    probe = subprocess.run(
        [str(python), "-c", "import deepsparse, onnx, numpy"], capture_output=True, text=True
    )
    return probe.returncode == 0


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def build_venv(venv: Path) -> Path:
    """DIR's Python with DeepSparse installed, creating the venv and installing when needed."""
    python = venv_python(venv)
    if python.exists() and _has_deepsparse(python):
        return python
    if not python.exists():
        base = _python311()
        if base is None:
            raise DeepSparseUnavailable("no Python 3.11 (python3.11 or python3) to build it with")
        made = subprocess.run([base, "-m", "venv", str(venv)], capture_output=True, text=True)
        if made.returncode != 0:
            raise DeepSparseUnavailable(f"`python -m venv {venv}` failed: {_last_line(made)}")
    print(f"installing {' '.join(DEEPSPARSE_PACKAGES)} into {venv} ...", file=sys.stderr)
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *DEEPSPARSE_PACKAGES],
        capture_output=True,
        text=True,
    )
    if pip.returncode != 0:
        raise DeepSparseUnavailable(f"pip install into {venv} failed: {_last_line(pip)}")
    return python


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (result.stderr or result.stdout or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["no output"])[-1].strip()


def deepsparse_python(build: Path | None, existing: Path | None) -> Path:
    if existing is not None:
        python = venv_python(existing)
        if not python.exists():
            raise DeepSparseUnavailable(f"{existing} is not a venv (no bin/python)")
        if not _has_deepsparse(python):
            raise DeepSparseUnavailable(
                f"{existing} lacks deepsparse/onnx/numpy (--build-venv {existing} installs them)"
            )
        return python
    if build is not None:
        return build_venv(build)
    raise DeepSparseUnavailable(
        "no DeepSparse venv given (--build-venv DIR builds one with deepsparse==1.8.0)"
    )


class DeepSparseWorker:
    """bench/deepsparse_worker.py under the venv's Python, one JSON request/answer at a time."""

    def __init__(self, python: Path, log: Path):
        self._log = open(log, "w")  # noqa: SIM115 - lives as long as the worker
        self.proc = subprocess.Popen(
            [str(python), str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self.log = log

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise DeepSparseUnavailable(self._died()) from None
        line = self.proc.stdout.readline()
        if not line:
            raise DeepSparseUnavailable(self._died())
        answer = json.loads(line)
        if "error" in answer:
            raise DeepSparseUnavailable(f"DeepSparse {request['op']}: {answer['error']}")
        return answer

    def _died(self) -> str:
        self.proc.wait(timeout=10)
        tail = [ln for ln in self.log.read_text().splitlines() if ln.strip()][-1:]
        return f"the DeepSparse worker exited ({self.proc.returncode}): {' '.join(tail)}"

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def start_deepsparse(args: argparse.Namespace, work: Path) -> DeepSparseWorker | None:
    """The worker, or None after printing the one line that says why DeepSparse is skipped."""
    try:
        python = deepsparse_python(args.build_venv, args.venv)
        worker = DeepSparseWorker(python, work / "deepsparse.log")
        try:
            hello = worker.ask(op="hello")
        except DeepSparseUnavailable:
            worker.close()
            raise
    except DeepSparseUnavailable as why:
        print(f"DeepSparse skipped: {why}", file=sys.stderr, flush=True)
        emit("deepsparse_skipped", reason=str(why))
        return None
    emit("deepsparse", python=str(python), **hello)
    return worker


# --- timing -------------------------------------------------------------------------------------


def wall_runs(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        ms.append((time.perf_counter_ns() - t0) / 1e6)
    return ms


def alternate(
    contenders: dict[str, Callable[[int, int], list[float]]], rounds: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Each contender ``repeats`` runs per round, rounds in rotating order; medians and spread."""
    names = list(contenders)
    runs: dict[str, list[float]] = {n: [] for n in names}
    round_medians: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            ms = contenders[n](2, repeats)
            runs[n] += ms
            round_medians[n].append(float(np.median(ms)))
    return {
        n: {
            "ms": round(float(np.median(runs[n])), 4),
            "round_min_ms": round(min(round_medians[n]), 4),
            "round_max_ms": round(max(round_medians[n]), 4),
        }
        for n in names
    }


def check_agree(
    what: str, got: np.ndarray, expected: np.ndarray, atol: float, rtol: float
) -> float:
    diff = np.abs(got - expected)
    worst = float(diff.max())
    if got.shape != expected.shape or not np.all(diff <= atol + rtol * np.abs(expected)):
        raise SystemExit(
            f"vs_deepsparse: {what} disagrees with torch by up to {worst:.3g} "
            f"(atol {atol:g}, rtol {rtol:g}): not timing a model that computes something else"
        )
    return worst


def pruneflow_runtime(model: nn.Module, name: str, sparsity: float, threads: int, batch: int):
    """SparseRuntime with each layer on the backend the profiler times fastest at ``sparsity``."""
    from pruneflow.timing import ProfileSettings, SparseRuntime, profile_model

    settings = ProfileSettings(
        batch_size=batch, threads=threads, levels=[0.0, sparsity], smooth_window=1, rounds=2
    )
    table, _ = profile_model(model, name, in_shape=IN_SHAPE, settings=settings)
    return SparseRuntime.from_table(model, table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-venv", type=Path, help="build (or reuse) DeepSparse's venv here")
    parser.add_argument("--venv", type=Path, help="an existing venv with DeepSparse")
    parser.add_argument("--models", nargs="+", default=list(SPARSITIES), choices=list(SPARSITIES))
    parser.add_argument("--sparsities", nargs="+", type=float, help="default: per model")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--atol", type=float, default=1e-3)
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from pruneflow.timing.table import bench_host

    torch.set_flush_denormal(True)
    emit("host", **bench_host(1))
    work = Path(tempfile.mkdtemp(prefix="pf-vs-deepsparse-"))
    worker = start_deepsparse(args, work)
    try:
        for name in args.models:
            run_model(args, name, worker, work)
    finally:
        if worker is not None:
            worker.close()
        shutil.rmtree(work, ignore_errors=True)


def run_model(
    args: argparse.Namespace, name: str, worker: DeepSparseWorker | None, work: Path
) -> None:
    """Every sparsity (and dense) of ``name`` at every thread count: check, then time."""
    from pruneflow.timing import SparseRuntime, thread_scope

    model = bench_model(name, args.seed)
    x = torch.randn(args.batch, *IN_SHAPE, generator=torch.Generator().manual_seed(args.seed + 1))
    x_path = work / f"{name}-x.npy"
    np.save(x_path, x.numpy())
    levels: Sequence[float] = args.sparsities or SPARSITIES[name]
    configs: list[tuple[float, nn.Module]] = [(0.0, model)]
    for s in levels:
        configs.append((s, masked_copy(model, magnitude_masks(model, name, s))))
    for threads in args.threads:
        for sparsity, net in configs:
            with torch.no_grad():
                expected = net(x).numpy()
            with thread_scope(threads), torch.no_grad():
                if sparsity == 0.0:
                    pf = SparseRuntime(net, "dense")
                else:
                    pf = pruneflow_runtime(net, name, sparsity, threads, args.batch)
                pf_diff = check_agree(
                    f"pruneflow on {name}", pf(x).numpy(), expected, args.atol, args.rtol
                )
            contenders: dict[str, Callable[[int, int], list[float]]] = {}

            def timed_in_scope(fn: Callable[[], object], threads: int = threads):
                def runs(warmup: int, repeats: int) -> list[float]:
                    with thread_scope(threads), torch.no_grad():
                        return wall_runs(fn, warmup, repeats)

                return runs

            contenders["pruneflow"] = timed_in_scope(lambda pf=pf: pf(x))
            if sparsity == 0.0:
                contenders["torch"] = timed_in_scope(lambda net=net: net(x))
            ds_diff = None
            engine = None
            if worker is not None:
                onnx_path = export_folded_onnx(net, work / f"{name}-{sparsity:g}.onnx")
                engine = worker.ask(
                    op="compile", onnx=str(onnx_path), batch=args.batch, threads=threads
                )["engine"]
                out_path = work / "ds-out.npy"
                worker.ask(op="run", engine=engine, input=str(x_path), output=str(out_path))
                ds_diff = check_agree(
                    f"DeepSparse on {name}", np.load(out_path), expected, args.atol, args.rtol
                )

                def ds_runs(warmup: int, repeats: int, engine: int = engine) -> list[float]:
                    return worker.ask(
                        op="time", engine=engine, input=str(x_path), warmup=warmup, repeats=repeats
                    )["ms"]

                contenders["deepsparse"] = ds_runs
            got = alternate(contenders, args.rounds, args.repeats)
            if engine is not None:
                worker.ask(op="close", engine=engine)
            ds = got.get("deepsparse")
            emit(
                "latency",
                model=name,
                sparsity=sparsity,
                threads=threads,
                batch_size=args.batch,
                pruneflow_ms=got["pruneflow"]["ms"],
                pruneflow_rounds_ms=[
                    got["pruneflow"]["round_min_ms"],
                    got["pruneflow"]["round_max_ms"],
                ],
                deepsparse_ms=ds and ds["ms"],
                deepsparse_rounds_ms=ds and [ds["round_min_ms"], ds["round_max_ms"]],
                speed_vs_deepsparse=ds and round(ds["ms"] / got["pruneflow"]["ms"], 3),
                torch_dense_ms=got.get("torch", {}).get("ms"),
                backends=sorted(set(pf.backends.values())),
                max_abs_diff={"pruneflow": pf_diff, "deepsparse": ds_diff},
                rounds=args.rounds,
                repeats=args.repeats,
                loadavg_1m=round(os.getloadavg()[0], 2),
            )


if __name__ == "__main__":
    main()
