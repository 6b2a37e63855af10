"""Channel masks during training, MRU restore, and extraction of the smaller model."""

import pytest
import torch
from torch import nn

from pruneflow.chex import FlopsModel, MaskState, count_flops, extract, find_groups
from pruneflow.chex.arch import build_model
from pruneflow.models.resnet_mini import resnet_mini


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, so eval-mode equality is not a coincidence of fresh BNs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)


def _random_masks(groups, seed: int = 0, keep: float = 0.5):
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for g in groups:
        mask = torch.rand(g.size, generator=gen) < keep
        mask[int(torch.randint(g.size, (1,), generator=gen))] = True
        masks[g.name] = mask
    return masks


def _tiny():
    torch.manual_seed(0)
    model = resnet_mini((1, 12, 12), 10, width=4)
    x = torch.randn(16, 1, 12, 12)
    return model, x, find_groups(model, x[:2])


def test_residual_channels_form_one_group_and_internal_ones_their_own():
    _, _, groups = _tiny()
    by_name = {g.name: g for g in groups}
    assert set(by_name["conv1"].producers) == {"conv1", "stage1.conv2"}  # stem + residual sum
    assert set(by_name["stage2.conv2"].producers) == {"stage2.conv2", "stage2.shortcut.0"}
    assert by_name["stage1.conv1"].producers == ["stage1.conv1"]
    assert by_name["stage1.conv1"].bns == ["stage1.bn1"]


def test_masked_channels_output_zero_and_receive_no_updates():
    model, x, groups = _tiny()
    state = MaskState(model, groups)
    masks = _random_masks(groups)
    state.set_active(masks)
    frozen = {k: state.tensor(k).detach().clone() for k in state.held_positions()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-3)
    y = torch.randint(0, 10, (16,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        state.hold(opt)
    for key, mask in state.held_positions().items():
        now = state.tensor(key)
        assert torch.equal(now[mask], frozen[key][mask]), key  # not moved by grad, decay, momentum
        for value in opt.state.get(now, {}).values():
            assert not value[mask].any()  # no stale velocity for a regrown channel
    mid = masks["stage1.conv1"]
    assert not model.stage1.conv1.weight[~mid].any()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "stage1.conv1.weight" in changed and "fc.weight" in changed  # active ones train
    seen = {}
    model.stage1.bn1.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    model.train()(x)
    assert not seen["out"][:, ~mid].any()  # a masked channel contributes nothing


def test_regrown_channels_restart_from_their_most_recently_used_weights():
    model, _, groups = _tiny()
    state = MaskState(model, groups)
    g = next(g for g in groups if g.name == "stage2.conv1")
    conv, bn = model.stage2.conv1, model.stage2.bn1
    with torch.no_grad():
        conv.weight[3].fill_(0.25)
        bn.weight[3] = 1.5
    mask = torch.ones(g.size, dtype=torch.bool)
    mask[3] = False
    state.set_active({**state.active, g.name: mask})
    assert not conv.weight[3].any() and bn.weight[3] == 0
    assert torch.all(state.channel_matrix(g)[:, 3] == 0.25)  # MRU visible to the regrow step
    with torch.no_grad():
        conv.weight.mul_(2.0)  # the others keep training meanwhile
    state.hold()
    state.set_active({**state.active, g.name: torch.ones(g.size, dtype=torch.bool)})
    assert torch.all(conv.weight[3] == 0.25) and bn.weight[3] == 1.5


@pytest.mark.parametrize(
    # resnet18_cifar's structure does not depend on the image size: 16x16 keeps the test fast
    "name,shape",
    [("smallcnn", (1, 16, 16)), ("resnet_mini", (1, 28, 28)), ("resnet18_cifar", (3, 16, 16))],
)
def test_extracted_model_equals_masked_model(name, shape):
    model = build_model(name, 10, shape, seed=0)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    groups = find_groups(model, x[:2])
    _randomise_bn(model)
    state = MaskState(model, groups)
    state.set_active(_random_masks(groups, keep=0.4))
    sub = extract(model, groups, state.active, x[:2])
    model.eval(), sub.eval()
    with torch.no_grad():
        masked, small = model(x), sub(x)
    assert torch.allclose(masked, small, atol=1e-4, rtol=1e-4), (masked - small).abs().max()
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in model.parameters())
    dense, extracted = count_flops(model, shape), count_flops(sub, shape)
    assert extracted < dense
    fm = FlopsModel(model, shape, groups)
    assert fm.dense() == dense and fm.flops(state.counts()) == extracted  # the formula is exact
