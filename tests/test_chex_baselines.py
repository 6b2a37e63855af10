"""The prune-then-fine-tune baselines: network slimming's BN-scale penalty and global selection,
and L1-norm filter selection, at a FLOPs target."""

import torch
from torch import nn

from pruneflow.chex.baselines import bn_l1_penalty, l1_masks, slimming_masks, uniform_counts
from pruneflow.chex.extract import extract
from pruneflow.chex.flops import count_flops
from pruneflow.chex.groups import find_groups
from pruneflow.models.resnet_mini import resnet_mini

SHAPE = (1, 12, 12)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return resnet_mini(SHAPE, 10, width=8)


def _grads(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(x).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_bn_penalty_adds_the_l1_subgradient_to_bn_scales_only_and_is_removed_after():
    model = _model()
    with torch.no_grad():
        model.bn1.weight[:4] *= -1  # both signs
    x = torch.randn(4, *SHAPE)
    plain = _grads(model, x)
    with bn_l1_penalty(model, 0.01):
        penalised = _grads(model, x)
    after = _grads(model, x)
    scales = {
        f"{n}.weight": m.weight.detach()
        for n, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    }
    assert len(scales) == 9  # stem, two per block, two shortcut projections
    for name, grad in plain.items():
        expected = 0.01 * torch.sign(scales[name]) if name in scales else torch.zeros_like(grad)
        assert torch.allclose(penalised[name] - grad, expected, atol=1e-6), name
        assert torch.equal(after[name], grad), name
    assert (torch.sign(scales["bn1.weight"]) < 0).sum() == 4


def test_slimming_keeps_the_largest_bn_scales_globally_within_the_flops_budget():
    model = _model()
    example = torch.randn(2, *SHAPE)
    groups = find_groups(model, example)
    with torch.no_grad():  # distinct scales: channel j of every BN gets a value rising with j
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.linspace(0.05, 1.0, m.num_features))
        model.stage3.bn1.weight.mul_(10.0)  # one layer matters far more: it keeps more
    masks = slimming_masks(model, example, 0.7, 0.1, groups)
    sub = extract(model, groups, masks, example)
    dense_flops = count_flops(model, SHAPE)
    assert count_flops(sub, SHAPE) <= 0.3 * dense_flops * (1 + 1e-9)
    assert count_flops(sub, SHAPE) > 0.25 * dense_flops  # the budget is used, not wasted
    kept = {name: int(m.sum()) for name, m in masks.items()}
    uniform = uniform_counts(model, example, 0.7, 0.1, groups)
    boosted = next(g.name for g in groups if g.size == 32 and "stage3.conv1" in g.name)
    assert kept[boosted] > uniform[boosted]  # the global ranking re-allocates
    for g in groups:  # within a group, the top-|gamma| channels (the highest indices here)
        idx = masks[g.name].nonzero().flatten()
        assert idx.tolist() == list(range(g.size - idx.numel(), g.size))


def test_l1_selection_keeps_the_filters_of_largest_norm():
    model = _model()
    example = torch.randn(2, *SHAPE)
    with torch.no_grad():
        model.stage1.conv1.weight[[1, 5]] *= 100.0
    counts = uniform_counts(model, example, 0.7, 0.1)
    masks = l1_masks(model, example, counts)
    group = next(name for name in masks if "stage1.conv1" in name)
    assert masks[group][[1, 5]].all() and int(masks[group].sum()) == counts[group]
