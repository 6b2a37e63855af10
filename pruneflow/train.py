"""Training and evaluation loops shared by every method.

Deterministic on CPU: the model's initial weights come from ``torch.manual_seed(seed)`` before
it is built (see :func:`seeded_build`), batches are shuffled with a generator seeded from the
same seed, and nothing else draws random numbers. The loops take any iterable of (images,
labels) batches through :class:`pruneflow.data.ImageData`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from pruneflow.config import TrainParams
from pruneflow.data import ImageData
from pruneflow.models import build


@dataclass
class History:
    """Per-epoch training curve (mean loss and accuracy on the labels trained on)."""

    loss: list[float] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)


def seeded_build(
    name: str, num_classes: int, in_shape: tuple[int, int, int], seed: int
) -> nn.Module:
    torch.manual_seed(seed)
    return build(name, num_classes, in_shape)


def make_optimizer(model: nn.Module, cfg: TrainParams) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(epoch: int, cfg: TrainParams) -> float:
    """Learning rate for ``epoch`` (0-based) under the configured schedule."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_size)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * epoch / cfg.epochs))


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.3f}"),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=True,
    )


def train(
    model: nn.Module,
    data: ImageData,
    indices: np.ndarray,
    labels: np.ndarray,
    cfg: TrainParams,
    progress: bool = False,
    after_step: Callable[[nn.Module], None] | None = None,
    description: str = "train",
    optimizer: torch.optim.Optimizer | None = None,
) -> History:
    """Train ``model`` in place on ``data[indices]`` with ``labels`` (indexed like ``data``).

    ``after_step`` runs after every optimizer step (the pruning methods re-apply masks there).
    ``optimizer`` lets a caller that must reach the optimizer's state (to clear the momentum of
    weights it prunes mid-training) own it; by default one is made from ``cfg``.
    """
    optimizer = optimizer if optimizer is not None else make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    loss_fn = nn.CrossEntropyLoss()
    history = History()
    with _progress(progress) as bar:
        task = bar.add_task(description, total=cfg.epochs, loss=float("nan"), acc=0.0)
        for epoch in range(cfg.epochs):
            lr = lr_at(epoch, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            total_loss, correct, seen = 0.0, 0, 0
            for x, y in data.batches(indices, labels, cfg.batch_size, True, generator):
                optimizer.zero_grad(set_to_none=True)
                out = model(x)
                loss = loss_fn(out, y)
                loss.backward()
                optimizer.step()
                if after_step is not None:
                    after_step(model)
                total_loss += loss.item() * y.numel()
                correct += (out.argmax(1) == y).sum().item()
                seen += y.numel()
            history.loss.append(total_loss / seen)
            history.acc.append(correct / seen)
            history.lr.append(lr)
            bar.update(task, advance=1, loss=history.loss[-1], acc=history.acc[-1])
    return history


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ImageData,
    indices: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 512,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on ``data[indices]``."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in data.batches(indices, labels, batch_size):
        out = model(x)
        total_loss += nn.functional.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
        seen += y.numel()
    if seen == 0:
        return float("nan"), float("nan")
    return total_loss / seen, correct / seen
