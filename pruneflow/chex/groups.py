"""Channel groups: which tensors slices move together when one conv output channel goes.

CHEX prunes conv output channels. A channel is more than one row of one conv: its BN scale and
shift, the input slice of every layer that reads it and, across a residual sum, the same channel
of every conv whose output is added. Torch-Pruning's dependency graph (traced once from an
example input) finds all of that for any architecture; :func:`find_groups` turns each of its
conv-rooted groups into a :class:`ChannelGroup`: a list of :class:`TensorSlice` (which tensor,
which dim, which positions belong to which channel). Masking and extraction then work on these
lists only, with no per-architecture code.

Residual connections: channels that meet in a residual sum form one group and are masked and
removed together (the stem, every block's second conv and every projection of a stage share
their channels). Pruning only the blocks' internal channels would leave ~5% of resnet_mini's
FLOPs prunable at full width and make 90% FLOPs reduction unreachable without gutting the
blocks, while a uniformly thinned network reduces every width: consistent group pruning gives
CHEX the same freedom as the baselines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import torch
import torch_pruning as tp
from torch import nn

from pruneflow.errors import PruneflowError

_NEEDS_BN = (
    "CHEX ranks channels by their BatchNorm scales |gamma|, so every pruned conv must feed a "
    "BatchNorm2d directly"
)


@dataclass(frozen=True)
class TensorSlice:
    """Positions ``idx`` along ``dim`` of ``module.attr`` belong to group channels ``root``.

    ``zero``: the slice is the channel's own output (conv filter, BN scale/shift), set to 0 while
    the channel is masked so it contributes nothing. Otherwise (a consumer's input slice, BN
    running statistics) it is only held at its value: it is multiplied by a zero input anyway.
    """

    module: str
    attr: str
    dim: int
    idx: torch.Tensor
    root: torch.Tensor
    zero: bool


@dataclass
class ChannelGroup:
    """The output channels of one or more convs that must be kept or removed together."""

    name: str  # the first producing conv in forward order
    size: int
    root: str  # the conv whose output channel numbers are the group's channel numbers
    producers: list[str]  # convs whose output channels these are
    bns: list[str]  # the BatchNorms right after them (the scales CHEX ranks)
    slices: list[TensorSlice] = field(default_factory=list)


def _slices_for(
    name: str, module: nn.Module, out: bool, idx: torch.Tensor, root: torch.Tensor
) -> list[TensorSlice]:
    def make(attr: str, dim: int, zero: bool) -> TensorSlice:
        return TensorSlice(name, attr, dim, idx, root, zero)

    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise PruneflowError(
                f"layer '{name}' is a grouped/depthwise convolution (groups={module.groups}): "
                "CHEX here supports ordinary convolutions only"
            )
        if not out:
            return [make("weight", 1, False)]
        return [make("weight", 0, True)] + (
            [make("bias", 0, True)] if module.bias is not None else []
        )
    if isinstance(module, nn.BatchNorm2d):
        slices = [make("weight", 0, True), make("bias", 0, True)] if module.affine else []
        if module.track_running_stats:
            slices += [make("running_mean", 0, False), make("running_var", 0, False)]
        return slices
    if isinstance(module, nn.Linear):
        if not out:
            return [make("weight", 1, False)]
        return [make("weight", 0, True)] + (
            [make("bias", 0, True)] if module.bias is not None else []
        )
    raise PruneflowError(
        f"layer '{name}' ({type(module).__name__}) shares channels with a pruned conv; CHEX "
        "here supports Conv2d, BatchNorm2d and Linear layers in channel groups"
    )


def _has_state(module: object) -> bool:
    if not isinstance(module, nn.Module):
        return False
    return any(True for _ in module.parameters(recurse=False)) or any(
        True for _ in module.buffers(recurse=False)
    )


def trace(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model``, traced in eval mode.

    Eval mode matters: the tracing forward pass would otherwise fold the example batch into the
    BatchNorm running statistics of the model being trained.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example, verbose=False
            )
    finally:
        model.train(was_training)


def _bn_after(graph: tp.DependencyGraph, conv: nn.Module) -> bool:
    node = graph.module2node.get(conv)
    return node is not None and any(isinstance(out.module, nn.BatchNorm2d) for out in node.outputs)


def select_groups(
    groups: list[ChannelGroup],
    include: Sequence[str],
    exclude: Sequence[str],
    model_name: str,
    order: Mapping[str, int],
) -> list[ChannelGroup]:
    """The groups whose channels are explored and pruned, by glob patterns over conv names.

    A group is a unit (its channels are kept or removed together across a residual sum), so
    ``include`` takes a group when one of its producing convs matches and ``exclude`` leaves a
    group whole when one of them matches. A pattern that matches no producing conv, or a
    selection that leaves no group, is one clear error. ``order``: the convs' forward order
    (for the message).
    """
    convs = sorted((c for g in groups for c in g.producers), key=lambda c: order.get(c, 0))
    for kind, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns:
            if not any(fnmatchcase(c, pattern) for c in convs):
                shown = ", ".join(convs[:8]) + (", ..." if len(convs) > 8 else "")
                raise PruneflowError(
                    f"chex.{kind} pattern '{pattern}' matches none of {model_name}'s convs "
                    f"whose channels CHEX prunes ({shown})"
                )

    def matches(group: ChannelGroup, patterns: Sequence[str]) -> bool:
        return any(fnmatchcase(c, pat) for c in group.producers for pat in patterns)

    chosen = [
        g
        for g in groups
        if (not include or matches(g, include)) and not (exclude and matches(g, exclude))
    ]
    if not chosen:
        raise PruneflowError(
            f"chex.include/exclude leave no channel group of {model_name} to prune"
        )
    return chosen


def find_groups(
    model: nn.Module,
    example: torch.Tensor,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    model_name: str | None = None,
) -> list[ChannelGroup]:
    """Every prunable conv-output channel group of ``model``, in forward order; with
    ``include``/``exclude`` patterns, those :func:`select_groups` keeps (the others' channels
    stay whole and count as fixed FLOPs).

    Channels that reach the model's output unchanged (a conv classifier) are not prunable and
    are left out. Raises :class:`PruneflowError` when a pruned conv has no BatchNorm after it,
    or when a layer CHEX cannot mask shares a group's channels.
    """
    graph = trace(model, example)
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    order = {n: i for i, n in enumerate(names.values())}
    model_name = model_name or type(model).__name__
    groups: list[ChannelGroup] = []
    for group in graph.get_all_groups(root_module_types=[nn.Conv2d]):
        if any(item.dep.target.type == tp.ops.OPTYPE.OUTPUT for item in group):
            continue
        root_module = group[0].dep.target.module
        producers, bns, slices = [], [], []
        for item in group:
            module = item.dep.target.module
            if not _has_state(module):
                continue  # activations, sums, reshapes: nothing to mask
            name = names[module]
            out = graph.is_out_channel_pruning_fn(item.dep.handler)
            idx = torch.as_tensor(list(item.idxs), dtype=torch.long)
            root = torch.as_tensor(list(item.root_idxs), dtype=torch.long)
            slices += _slices_for(name, module, out, idx, root)
            if isinstance(module, nn.Conv2d) and out:
                producers.append(name)
            elif isinstance(module, nn.BatchNorm2d):
                bns.append(name)
        if not producers:
            continue
        producers.sort(key=order.__getitem__)
        bns.sort(key=order.__getitem__)
        size = int(root_module.out_channels)
        groups.append(ChannelGroup(producers[0], size, names[root_module], producers, bns, slices))
    groups.sort(key=lambda g: order[g.name])
    if groups and (include or exclude):
        groups = select_groups(groups, include, exclude, model_name, order)
    for conv in sorted((c for g in groups for c in g.producers), key=order.__getitem__):
        if not _bn_after(graph, modules[conv]):
            raise PruneflowError(
                f"{_NEEDS_BN}; conv '{conv}' of {model_name} does not. Use a model with "
                "BatchNorm after its convs (resnet_mini, smallcnn, resnet18_cifar, ...)"
            )
    if not groups:
        raise PruneflowError(
            f"{model_name} has no prunable conv channels: {_NEEDS_BN}, and CHEX prunes conv "
            "output channels"
        )
    return groups
