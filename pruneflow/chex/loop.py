"""The training loop every CHEX-comparison method shares: random shifts and a per-step hook.

``pruneflow.train.train`` has neither the random-shift augmentation the comparison recipe uses
nor a hook that sees the iteration number and the optimizer (CHEX explores every ``Delta_T``
iterations and clears masked channels' momentum), so this loop reuses its optimizer and LR
schedule (:func:`make_optimizer`, :func:`lr_at`) and adds both. Deterministic on CPU: batch
order and shifts come from generators seeded by ``cfg.seed``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from pruneflow.config import TrainParams
from pruneflow.data import ImageData
from pruneflow.train import History, lr_at, make_optimizer

Hook = Callable[[int, torch.optim.Optimizer], None]


def random_shift(
    x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shift every image by its own random offset of up to ``max_shift`` pixels each way.

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


def _bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.3f}"),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=True,
    )


def fit(
    model: nn.Module,
    data: ImageData,
    indices: np.ndarray,
    labels: np.ndarray,
    cfg: TrainParams,
    shift: int = 0,
    after_step: Hook | None = None,
    progress: bool = False,
    description: str = "train",
) -> History:
    """Train ``model`` in place for ``cfg.epochs`` on ``data[indices]`` with ``labels``.

    ``after_step(iteration, optimizer)`` runs after every optimizer step, ``iteration``
    counting from 1.
    """
    optimizer = make_optimizer(model, cfg)
    order = torch.Generator().manual_seed(cfg.seed)
    shifts = torch.Generator().manual_seed(cfg.seed + 7919)  # its own stream: same batches
    loss_fn = nn.CrossEntropyLoss()
    history = History()
    iteration = 0
    with _bar(progress) as bar:
        task = bar.add_task(description, total=cfg.epochs, loss=float("nan"), acc=0.0)
        for epoch in range(cfg.epochs):
            lr = lr_at(epoch, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            total_loss, correct, seen = 0.0, 0, 0
            for x, y in data.batches(indices, labels, cfg.batch_size, True, order):
                x = random_shift(x, shift, shifts)
                optimizer.zero_grad(set_to_none=True)
                out = model(x)
                loss = loss_fn(out, y)
                loss.backward()
                optimizer.step()
                iteration += 1
                if after_step is not None:
                    after_step(iteration, optimizer)
                total_loss += loss.item() * y.numel()
                correct += (out.argmax(1) == y).sum().item()
                seen += y.numel()
            history.loss.append(total_loss / max(seen, 1))
            history.acc.append(correct / max(seen, 1))
            history.lr.append(lr)
            bar.update(task, advance=1, loss=history.loss[-1], acc=history.acc[-1])
    return history
