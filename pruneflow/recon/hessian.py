"""Layer Hessians of the reconstruction objective, captured from calibration batches.

For a layer ``y = W x (+ b)`` the squared output change of a replacement ``W'`` over the
calibration set splits over output rows: ``sum_n ||(W - W') X_n||^2 = N/2 * sum_rows
(w - w')^T H (w - w')`` with ``H = (2/N) sum_n X_n X_n^T`` (the bias cancels). ``X_n`` is

- for ``nn.Linear``: the layer's input row(s) for sample ``n`` (``[N, ..., d]`` inputs are
  flattened to rows);
- for ``nn.Conv2d``: the ``F.unfold`` patch matrix of image ``n``, ``(C_in*kh*kw) x positions``,
  with the layer's kernel size, stride, dilation and padding (non-zero padding modes are applied
  with ``F.pad`` first). Its row order is that of ``weight.flatten(1)``. Grouped convolutions
  are refused: their weight is block-diagonal over groups, which one H per layer cannot express.

``N`` counts images (the first dimension of the layer input), not patches, as OBC does; the
scale cancels in every relative error anyway. Inputs are taken from the *dense* model through
forward pre-hooks, so every layer's problem is independent of how the others get pruned.

Storage (float64, on the chosen device while capturing, returned on the CPU). A layer's
statistic is kept as a dense running mean ``H <- H * n/(n+b) + (2/(n+b)) X^T X``, or, while the
layer has seen at most ``dim // 2`` input rows, as those raw rows ``R`` (``H = (2/N) R^T R``,
rank <= r). The factor form is what makes very wide layers cheap: smallcnn's ``fc1`` has 12,544
inputs but sees only 1,024 calibration rows, so its factor is 1,024 x 12,544 (100 MB) against a
1.26 GB dense H, and the fast solver (``sparsegpt.py``) then avoids the three O(d^3)
factorizations (~85 s on two x86 cores in float64) that a dense H would need. ``Hessian.dense()``
materializes H either way. Gram products are computed in float64 (chunked to bound memory).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneflow.errors import PruneflowError
from pruneflow.recon._common import exact_fp32, make_progress
from pruneflow.runtime import resolve_device

# float64 elements per chunk of input rows turned into a Gram product (128 MiB)
_CHUNK_ELEMENTS = 1 << 24


@dataclass
class Hessian:
    """``H = (2/N) sum_n X_n X_n^T`` of one layer: a dense matrix or a low-rank row factor.

    Exactly one of ``matrix`` (the dense running mean, ``dim x dim``) and ``rows`` (the raw
    input rows, ``r x dim``, with ``H = (2/N) rows^T rows``) is set. Both are float64.
    """

    dim: int
    n_images: int
    matrix: Tensor | None = None
    rows: Tensor | None = None

    def __post_init__(self) -> None:
        if (self.matrix is None) == (self.rows is None):
            raise PruneflowError("a Hessian needs exactly one of a dense matrix or input rows")

    @classmethod
    def from_matrix(cls, matrix: Tensor, n_images: int = 1) -> Hessian:
        """Wrap a dense (d x d) Hessian, e.g. one computed elsewhere or loaded from a cache."""
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise PruneflowError(f"a Hessian must be a square matrix, got {tuple(matrix.shape)}")
        return cls(dim=matrix.shape[0], n_images=n_images, matrix=matrix.to(torch.float64))

    @property
    def low_rank(self) -> bool:
        return self.rows is not None

    def factor(self) -> Tensor:
        """``F`` (r x dim) with ``H = F^T F``; only for the low-rank form."""
        if self.rows is None:
            raise PruneflowError("this Hessian is dense; it has no row factor")
        return self.rows * math.sqrt(2.0 / max(self.n_images, 1))

    def dense(self) -> Tensor:
        """The (dim x dim) float64 matrix."""
        if self.matrix is not None:
            return self.matrix
        f = self.factor()
        return f.T @ f

    def diag(self) -> Tensor:
        if self.matrix is not None:
            return self.matrix.diagonal().clone()
        return self.factor().square().sum(0)

    def to(self, device: torch.device | str) -> Hessian:
        m = None if self.matrix is None else self.matrix.to(device)
        r = None if self.rows is None else self.rows.to(device)
        return Hessian(self.dim, self.n_images, m, r)

    def to_tensors(self) -> dict[str, Tensor]:
        """Tensors for caching with ``io.save_tensors``; inverse of :meth:`from_tensors`."""
        count = torch.tensor([self.n_images, self.dim], dtype=torch.int64)
        if self.matrix is not None:
            return {"matrix": self.matrix.cpu(), "count": count}
        assert self.rows is not None
        return {"rows": self.rows.cpu(), "count": count}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> Hessian:
        try:
            n_images, dim = (int(v) for v in tensors["count"].tolist())
        except (KeyError, ValueError) as exc:
            raise PruneflowError("cached Hessian has no valid 'count' entry") from exc
        return cls(dim, n_images, tensors.get("matrix"), tensors.get("rows"))


@dataclass
class _Accumulator:
    dim: int
    max_rows: int
    n_images: int = 0
    matrix: Tensor | None = None
    chunks: list[Tensor] = field(default_factory=list)
    n_rows: int = 0

    def add(self, x: Tensor, images: int) -> None:
        """Add input rows ``x`` (rows x dim, any float dtype) coming from ``images`` images."""
        total = self.n_images + images
        if self.matrix is None and self.n_rows + x.shape[0] <= self.max_rows:
            self.chunks.append(x.to(torch.float64))
            self.n_rows += x.shape[0]
            self.n_images = total
            return
        if self.matrix is None:  # too many rows for the factor form: switch to dense for good
            self.matrix = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=x.device)
            for chunk in self.chunks:
                self._gram(chunk, 1.0)
            self.matrix.mul_(2.0 / max(self.n_images, 1))
            self.chunks.clear()
        self.matrix.mul_(self.n_images / total)
        self._gram(x, 2.0 / total)
        self.n_images = total

    def _gram(self, x: Tensor, alpha: float) -> None:
        assert self.matrix is not None
        step = max(1, _CHUNK_ELEMENTS // self.dim)
        for i in range(0, x.shape[0], step):
            part = x[i : i + step].to(torch.float64)
            self.matrix.addmm_(part.T, part, alpha=alpha)

    def result(self) -> Hessian:
        if self.n_images == 0:
            raise PruneflowError("no calibration batch reached this layer; got an empty loader?")
        if self.matrix is not None:
            return Hessian(self.dim, self.n_images, matrix=self.matrix.cpu())
        rows = torch.cat(self.chunks) if self.chunks else torch.zeros(0, self.dim)
        return Hessian(self.dim, self.n_images, rows=rows.to(torch.float64).cpu())


def layer_input_dim(module: nn.Module, name: str = "layer") -> int:
    """Columns of the layer's flattened weight; refuses layers H cannot describe."""
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise PruneflowError(
                f"layer '{name}' is a grouped convolution (groups={module.groups}); the "
                "reconstruction database supports only groups=1 Conv2d and Linear layers"
            )
        kh, kw = module.kernel_size
        return module.in_channels * kh * kw
    raise PruneflowError(
        f"layer '{name}' is a {type(module).__name__}; only Conv2d and Linear can be reconstructed"
    )


def layer_rows(module: nn.Module, x: Tensor) -> Tensor:
    """The layer input as rows of ``weight.flatten(1)``'s column space: (rows x d_col)."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, module.in_features)
    assert isinstance(module, nn.Conv2d)
    x = F.pad(x, _conv_padding(module), mode=_pad_mode(module))
    cols = F.unfold(x, module.kernel_size, dilation=module.dilation, stride=module.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _pad_mode(conv: nn.Conv2d) -> str:
    return "constant" if conv.padding_mode == "zeros" else conv.padding_mode


def _conv_padding(conv: nn.Conv2d) -> list[int]:
    """F.pad's (left, right, top, bottom) for the conv, including padding='same'/'valid'."""
    if conv.padding == "valid":
        return [0, 0, 0, 0]
    if conv.padding == "same":  # same split as torch: the extra pixel goes right/bottom
        out: list[int] = []
        for d, k in zip(reversed(conv.dilation), reversed(conv.kernel_size), strict=True):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return out
    ph, pw = conv.padding  # type: ignore[misc]
    return [pw, pw, ph, ph]


def capture_hessians(
    model: nn.Module,
    layers: Sequence[str],
    batches: Iterable[Tensor | Sequence[Tensor]],
    *,
    device: str | torch.device = "auto",
    low_rank: str | int = "auto",
    progress: bool | str = "auto",
) -> dict[str, Hessian]:
    """One forward pass over ``batches`` through the dense model; returns each layer's Hessian.

    ``batches`` yields input tensors or ``(inputs, labels, ...)`` tuples. The model runs in eval
    mode (BN uses its running statistics) without gradients, on ``device`` ('auto' picks CUDA
    when available); its mode and device are restored afterwards. ``low_rank``: 'auto' keeps a
    layer in factor form while it has seen at most ``dim // 2`` input rows; an int sets that
    row limit (0: always dense).
    """
    dev = resolve_device(device)
    modules = dict(model.named_modules())
    accs: dict[str, _Accumulator] = {}
    for name in layers:
        if name not in modules:
            raise PruneflowError(f"model {type(model).__name__} has no layer '{name}'")
        dim = layer_input_dim(modules[name], name)
        limit = dim // 2 if low_rank == "auto" else int(low_rank)
        accs[name] = _Accumulator(dim=dim, max_rows=limit)

    def hook(name: str):
        def fn(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0]
            accs[name].add(layer_rows(module, x.detach()), images=x.shape[0])

        return fn

    was_training = model.training
    param = next(model.parameters(), None)
    old_device = param.device if param is not None else dev
    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in layers]
    try:
        model.to(dev).eval()
        with torch.no_grad(), exact_fp32(), make_progress(progress) as bar:
            task = bar.add_task("hessians", total=None)
            for batch in batches:
                x = batch if isinstance(batch, Tensor) else batch[0]
                model(x.to(dev))
                bar.advance(task)
    finally:
        for h in handles:
            h.remove()
        model.to(old_device).train(was_training)
    return {name: acc.result() for name, acc in accs.items()}
