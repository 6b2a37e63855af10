"""Channel masks on a live model: masked channels output zero and are frozen while masked.

A masked channel's own output tensors (conv filter, BN scale and shift) are set to zero, so it
outputs exactly zero in train and eval mode; its consumers' input slices and its BN running
statistics are held at their values. "Held" is enforced after every optimizer step
(:meth:`MaskState.hold`): gradients through a zero channel are zero, but weight decay and
momentum would still move those entries, and the optimizer's momentum for them is cleared so a
regrown channel does not restart with a stale velocity.

When a channel is masked, the values of its zeroed tensors are kept (most recently used, MRU);
when it is unmasked (regrown) they are put back, so it restarts where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from pruneflow.chex.groups import ChannelGroup, TensorSlice

Key = tuple[str, str]  # (module name, attribute)


class MaskState:
    """The active/masked state of every channel group of ``model`` (all active at first)."""

    def __init__(self, model: nn.Module, groups: list[ChannelGroup]):
        self.model = model
        self.groups = groups
        modules = dict(model.named_modules())
        self._tensors: dict[Key, torch.Tensor] = {}
        for g in groups:
            for s in g.slices:
                self._tensors[(s.module, s.attr)] = getattr(modules[s.module], s.attr)
        self.active: dict[str, torch.Tensor] = {
            g.name: torch.ones(g.size, dtype=torch.bool) for g in groups
        }
        self._zero: dict[Key, torch.Tensor] = {}  # positions set to 0 (a masked channel's output)
        self._frozen: dict[Key, torch.Tensor] = {}  # every held position (zeroed ones included)
        self._inputs: dict[Key, torch.Tensor] = {}  # held positions that are not zeroed
        self._held: dict[Key, torch.Tensor] = {}
        self._mru: dict[Key, torch.Tensor] = {}

    def tensor(self, key: Key) -> torch.Tensor:
        return self._tensors[key]

    def held_positions(self) -> dict[Key, torch.Tensor]:
        """Per tensor, the entries held in place (bool, the tensor's shape)."""
        return dict(self._frozen)

    def counts(self) -> dict[str, int]:
        """Active channels per group."""
        return {name: int(mask.sum()) for name, mask in self.active.items()}

    def _positions(
        self, active: Mapping[str, torch.Tensor]
    ) -> tuple[dict[Key, torch.Tensor], dict[Key, torch.Tensor]]:
        zero: dict[Key, torch.Tensor] = {}
        held: dict[Key, torch.Tensor] = {}
        for g in self.groups:
            masked_roots = ~active[g.name]
            if not masked_roots.any():
                continue
            for s in g.slices:
                pos = s.idx[masked_roots[s.root]]
                if pos.numel() == 0:
                    continue
                key = (s.module, s.attr)
                t = self._tensors[key]
                line = torch.zeros(t.shape[s.dim], dtype=torch.bool)
                line[pos] = True
                shape = [1] * t.dim()
                shape[s.dim] = -1
                full = line.view(shape).expand_as(t)
                target = zero if s.zero else held
                target[key] = target[key] | full if key in target else full.clone()
        frozen = {k: v.clone() for k, v in held.items()}
        for k, v in zero.items():
            frozen[k] = frozen[k] | v if k in frozen else v.clone()
        return zero, frozen

    @torch.no_grad()
    def set_active(self, active: Mapping[str, torch.Tensor]) -> None:
        """Switch to new masks: save MRU values of newly masked channels, restore regrown ones."""
        new = {
            g.name: torch.as_tensor(active[g.name], dtype=torch.bool).clone() for g in self.groups
        }
        for g in self.groups:
            if new[g.name].shape != (g.size,) or not new[g.name].any():
                raise ValueError(f"mask of group {g.name} must have {g.size} entries, one active")
        zero, frozen = self._positions(new)
        for key in set(self._zero) | set(zero):
            t = self._tensors[key]
            old_z = self._zero.get(key)
            new_z = zero.get(key)
            if old_z is not None:
                leaving = old_z if new_z is None else old_z & ~new_z
                t.copy_(torch.where(leaving, self._mru[key], t))
            if new_z is not None:
                entering = new_z if old_z is None else new_z & ~old_z
                mru = self._mru.setdefault(key, torch.zeros_like(t))
                mru.copy_(torch.where(entering, t, mru))
                t.masked_fill_(new_z, 0.0)
        self.active = new
        self._zero = zero
        self._frozen = frozen
        self._inputs = {k: (v & ~zero[k]) if k in zero else v for k, v in frozen.items()}
        self._held = {k: self._tensors[k].detach().clone() for k in frozen}

    @torch.no_grad()
    def hold(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Put every masked entry back to its held value and clear its optimizer state.

        Called after each optimizer step: this is what makes masked channels receive no update.
        """
        for key, frozen in self._frozen.items():
            t = self._tensors[key]
            t.copy_(torch.where(frozen, self._held[key], t))
            if optimizer is not None and isinstance(t, nn.Parameter):
                for value in optimizer.state.get(t, {}).values():
                    if torch.is_tensor(value) and value.shape == t.shape:
                        value.masked_fill_(frozen, 0.0)

    def mru_view(self, key: Key) -> torch.Tensor:
        """The tensor with masked channels' zeroed entries replaced by their MRU values and the
        entries fed by masked inputs set to zero: the weights each channel would have if it
        were the only one regrown into the current sub-model."""
        t = self._tensors[key].detach()
        if key in self._zero:
            t = torch.where(self._zero[key], self._mru[key], t)
        if key in self._inputs:
            t = t.masked_fill(self._inputs[key], 0.0)
        return t

    def _per_channel(
        self,
        group: ChannelGroup,
        slices: list[TensorSlice],
        width: int,
        value: Callable[[TensorSlice], torch.Tensor],
    ) -> torch.Tensor:
        """Sum over ``slices`` of their rows, placed at their group channels."""
        out = torch.zeros(group.size, width)
        for s in slices:
            rows = value(s).index_select(0, s.idx).reshape(len(s.idx), -1)
            out.index_add_(0, s.root, rows.to(out.dtype))
        return out

    def channel_matrix(self, group: ChannelGroup) -> torch.Tensor:
        """The group's weight matrix, one column per channel: the producers' filters (each
        flattened) stacked as rows, MRU values for masked channels."""
        blocks = []
        for conv in group.producers:
            mine = [s for s in group.slices if s.module == conv and s.attr == "weight" and s.zero]
            width = self._tensors[(conv, "weight")][0].numel()
            blocks.append(
                self._per_channel(group, mine, width, lambda s: self.mru_view((s.module, s.attr)))
            )
        return torch.cat(blocks, dim=1).T.contiguous()

    def bn_scores(self, group: ChannelGroup) -> torch.Tensor:
        """Mean |gamma| over the group's BatchNorms, per channel (0 for masked channels)."""
        mine = [s for s in group.slices if s.module in group.bns and s.attr == "weight"]
        gammas = self._per_channel(
            group, mine, 1, lambda s: self._tensors[(s.module, s.attr)].detach().abs()
        )
        return gammas[:, 0] / max(len(group.bns), 1)
