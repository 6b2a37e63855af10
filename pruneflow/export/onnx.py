"""ONNX export of an eval-mode model (opset 17+, dynamic batch) and its check in onnxruntime.

The TorchScript-based exporter (``dynamo=False``) is used: it needs no ``onnxscript`` and takes
every model the pipelines run (torchvision's included). The exported graph is checked by
running it in onnxruntime on real images against the torch model, and timed there against the
dense model's graph. onnxruntime runs the zeros of a pruned weight as a dense kernel does, so
its speedup shows what a dense runtime gains (about nothing); the measured sparse speedup is
SPDY's own (``spdy_results``).
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.io import atomic_path

INPUT, OUTPUT = "images", "logits"


def export_onnx(model: nn.Module, in_shape: tuple[int, ...], path: str | Path, opset: int) -> Path:
    """Write ``model`` (eval mode) as ONNX with a dynamic batch axis, atomically."""
    if opset < 17:
        raise PruneflowError(f"export: opset must be 17 or newer, got {opset}")
    was_training = model.training
    model.eval()
    example = torch.zeros(2, *in_shape)
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                opset_version=opset,
                dynamo=False,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            )
    except PruneflowError:
        raise
    except Exception as exc:  # the exporter fails with many types on unsupported ops
        raise PruneflowError(
            f"export: {type(model).__name__} cannot be exported to ONNX opset {opset}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    finally:
        model.train(was_training)
    return Path(path)


def _session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: str | Path, images: torch.Tensor, threads: int = 1) -> np.ndarray:
    """The ONNX model's logits for ``images`` (onnxruntime, CPU)."""
    return _session(path, threads).run([OUTPUT], {INPUT: images.numpy().astype(np.float32)})[0]


def check_onnx(
    path: str | Path, model: nn.Module, images: torch.Tensor, atol: float, rtol: float
) -> float:
    """Max |onnxruntime - torch| over ``images``' logits; an error past
    ``atol + rtol * |torch|``."""
    model.eval()
    with torch.no_grad():
        expected = model(images).numpy()
    got = run_onnx(path, images)
    if got.shape != expected.shape:
        raise PruneflowError(f"{path}: onnxruntime gives shape {got.shape}, torch {expected.shape}")
    diff = np.abs(got - expected)
    worst = float(diff.max()) if diff.size else 0.0
    if not np.all(diff <= atol + rtol * np.abs(expected)):
        raise PruneflowError(
            f"{path}: onnxruntime's outputs differ from torch's by up to {worst:.3g} "
            f"(export.atol = {atol:g}, export.rtol = {rtol:g})"
        )
    return worst


def ort_latency_ms(
    path: str | Path,
    in_shape: tuple[int, ...],
    batch_size: int,
    repeats: int,
    threads: int = 1,
    warmup: int = 3,
) -> float:
    """Median wall time (ms) of one onnxruntime run of a ``batch_size`` batch."""
    session = _session(path, threads)
    x = np.random.default_rng(0).standard_normal((batch_size, *in_shape)).astype(np.float32)
    for _ in range(warmup):
        session.run([OUTPUT], {INPUT: x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run([OUTPUT], {INPUT: x})
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def ort_session(path: str | Path, threads: int = 1):  # noqa: ANN201
    """An onnxruntime CPU session of ``path`` with ``threads`` intra-op threads (one
    inter-op), as :func:`run_onnx` and :func:`ort_latency_ms` run it."""
    return _session(path, threads)
