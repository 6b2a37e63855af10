"""Training and evaluation loops shared by every method.

Deterministic on CPU: the model's initial weights come from torch's generator seeded ``seed``
for this build alone (see :func:`seeded_build`, :mod:`pruneflow.seeding`), batches are shuffled
with a generator seeded from the same seed, the optional random shifts (:func:`random_shift`)
draw from their own generator seeded from it too, and nothing else draws random numbers. The
loops take any iterable of (images, labels) batches through :class:`pruneflow.data.ImageData`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from pruneflow import memory_format
from pruneflow.config import TrainParams
from pruneflow.data import ImageData
from pruneflow.errors import PruneflowError
from pruneflow.models import build
from pruneflow.runtime import current_device, report_progress
from pruneflow.seeding import torch_seeded

# the seed offset of the shift generator: its own stream, so shifting leaves the batch order
SHIFT_SEED_OFFSET = 7919
StepHook = Callable[[int, torch.optim.Optimizer], None]


@dataclass
class History:
    """Per-epoch training curve (mean loss and accuracy on the labels trained on)."""

    loss: list[float] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)


def seeded_build(
    name: str, num_classes: int, in_shape: tuple[int, int, int], seed: int
) -> nn.Module:
    with torch_seeded(seed):  # see pruneflow.seeding
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


def random_shift(
    x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shift every image of ``x`` [n, c, h, w] by its own random offset of up to ``max_shift``
    pixels each way (training-time augmentation; ``max_shift`` 0 returns ``x`` and draws
    nothing).

    Borders are filled by replicating the edge pixels, which is the background for MNIST-like
    digits (zero padding of normalised images would paint a frame darker than the background).
    """
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s), mode="replicate")
    dy = torch.randint(0, 2 * s + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * s + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None])[:, :, None]
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, :]
    batch = torch.arange(n)[:, None, None]
    # advanced indices around a slice: the indexed dims come first -> [n, h, w, c]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()


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
    *,
    shift: int = 0,
    on_step: StepHook | None = None,
    max_steps: int | None = None,
) -> History:
    """Train ``model`` in place on ``data[indices]`` with ``labels`` (indexed like ``data``).

    ``after_step`` runs after every optimizer step (the pruning methods re-apply masks there).
    ``optimizer`` lets a caller that must reach the optimizer's state (to clear the momentum of
    weights it prunes mid-training) own it; by default one is made from ``cfg``.
    ``shift`` > 0 shifts every training image by up to that many pixels (:func:`random_shift`,
    from a generator seeded ``cfg.seed + SHIFT_SEED_OFFSET``, so the batch order is the same
    with or without it). ``on_step(iteration, optimizer)`` runs after every optimizer step and
    after ``after_step``, ``iteration`` counting from 1 over the whole run (CHEX explores every
    Delta_T iterations there and clears masked channels' momentum). ``max_steps`` ends the run
    after that many optimizer steps, within its last epoch (a run of fractional epochs: the
    history's last entry then covers the part of the epoch that ran).
    """
    if max_steps is not None and max_steps < 1:
        raise PruneflowError(f"a training run needs at least one step, got max_steps={max_steps}")
    device = current_device()
    home = _device_of(model)
    model.to(device)  # before the optimizer's state exists: it follows the parameters
    optimizer = optimizer if optimizer is not None else make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    shifts = torch.Generator().manual_seed(cfg.seed + SHIFT_SEED_OFFSET) if shift > 0 else None
    iteration = 0
    loss_fn = nn.CrossEntropyLoss()
    history = History()
    # channels-last convolutions: ~10% less CPU per training step here; both they and oneDNN
    # only where oneDNN trains without corrupting memory (pruneflow.memory_format)
    with (
        _progress(progress) as bar,
        memory_format.training_backend(model) as onednn,
        memory_format.channels_last(model) if onednn else contextlib.nullcontext(False) as nhwc,
    ):
        task = bar.add_task(description, total=cfg.epochs, loss=float("nan"), acc=0.0)
        for epoch in range(cfg.epochs):
            lr = lr_at(epoch, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            total_loss, correct, seen = 0.0, 0, 0
            for x, y in data.batches(indices, labels, cfg.batch_size, True, generator):
                if iteration == max_steps:
                    break
                x = random_shift(x, shift, shifts)
                x = memory_format.as_channels_last(x.to(device)) if nhwc else x.to(device)
                y = y.to(device)
                optimizer.zero_grad(set_to_none=True)
                out = model(x)
                loss = loss_fn(out, y)
                loss.backward()
                optimizer.step()
                iteration += 1
                if after_step is not None:
                    after_step(model)
                if on_step is not None:
                    on_step(iteration, optimizer)
                total_loss += loss.item() * y.numel()
                correct += (out.argmax(1) == y).sum().item()
                seen += y.numel()
            history.loss.append(total_loss / seen)
            history.acc.append(correct / seen)
            history.lr.append(lr)
            bar.update(task, advance=1, loss=history.loss[-1], acc=history.acc[-1])
            report_progress(description, epoch + 1, cfg.epochs)
            if iteration == max_steps:
                break
    model.to(home)
    return history


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


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
    device, home = current_device(), _device_of(model)
    model.to(device)
    with memory_format.channels_last(model) as nhwc:
        for x, y in data.batches(indices, labels, batch_size):
            x, y = x.to(device), y.to(device)
            out = model(memory_format.as_channels_last(x) if nhwc else x)
            total_loss += nn.functional.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            seen += y.numel()
    model.to(home)
    if seen == 0:
        return float("nan"), float("nan")
    return total_loss / seen, correct / seen
