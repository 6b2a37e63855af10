"""The exploration hook in a short training run, and the inputs it refuses before training."""

import pytest
import torch
from torch import nn

from pruneflow import config
from pruneflow.chex import ChexExplorer, ExploreSettings, count_flops, extract, find_groups
from pruneflow.chex.explore import regrow_count
from pruneflow.errors import PruneflowError
from pruneflow.models import build
from pruneflow.models.resnet_mini import resnet_mini


def _train(explorer: ChexExplorer, model: nn.Module, steps: int, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 1, 12, 12, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    snapshots = []
    for it in range(1, steps + 1):
        idx = torch.randint(0, 64, (16,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        explorer.after_step(it, opt)
        snapshots.append({k: v.clone() for k, v in explorer.state.active.items()})
    return snapshots


def test_exploration_prunes_regrows_and_ends_on_the_flops_budget():
    torch.manual_seed(0)
    model = resnet_mini((1, 12, 12), 10, width=4)
    example = torch.randn(2, 1, 12, 12)
    settings = ExploreSettings(delta_t=2, t_max=8, flops_reduction=0.6, delta0=0.5, seed=0)
    explorer = ChexExplorer(model, example, settings)
    masks = _train(explorer, model, 12)
    steps = sorted({row["step"] for row in explorer.history})
    assert steps == [1, 2, 3, 4] and explorer.n_steps == 4
    first = [r for r in explorer.history if r["step"] == 1]
    assert sum(r["regrown"] for r in first) > 0  # early steps regrow
    assert all(r["regrown"] == 0 for r in explorer.history if r["step"] == 4)  # delta = 0
    assert all(r["active"] >= 1 for r in explorer.history)
    for later in masks[8:]:  # the architecture is fixed after T_max
        assert all(torch.equal(later[k], masks[7][k]) for k in later)
    assert explorer.effective_flops() <= 0.4 * explorer.dense_flops
    assert explorer.effective_flops() > 0.3 * explorer.dense_flops  # close to, not far below
    sub = extract(model, explorer.groups, explorer.state.active, example)
    assert count_flops(sub, (1, 12, 12)) == explorer.effective_flops()


def test_regrow_count_is_delta_times_the_full_width_not_the_pruned_channels():
    assert regrow_count(0.25, 32, 20) == 8  # delta x C, where delta x pruned would give 5
    assert regrow_count(0.25, 32, 3) == 3  # capped at what there is to regrow
    assert regrow_count(0.0, 32, 20) == 0
    torch.manual_seed(0)
    model = resnet_mini((1, 12, 12), 10, width=8)
    settings = ExploreSettings(delta_t=1, t_max=4, sparsity=0.6, delta0=0.3, min_fraction=0.1)
    explorer = ChexExplorer(model, torch.randn(2, 1, 12, 12), settings)
    _train(explorer, model, 4)
    for row in explorer.history:
        pruned = row["size"] - row["allocated"]
        assert row["regrown"] == min(pruned, round(row["delta"] * row["size"]))
        assert row["active"] == row["allocated"] + row["regrown"]
    first = [r for r in explorer.history if r["step"] == 1]
    # at step 1 (delta ~ 0.26) a 32-channel group regrows 8 channels, not 26% of its pruned ones
    wide = [r for r in first if r["size"] == 32 and r["size"] - r["allocated"] >= 9]
    assert wide and all(r["regrown"] == round(r["delta"] * 32) for r in wide)
    assert all(r["regrown"] > round(r["delta"] * (r["size"] - r["allocated"])) for r in wide)


def test_channel_sparsity_target_keeps_one_minus_s_of_the_channels():
    torch.manual_seed(0)
    model = resnet_mini((1, 12, 12), 10, width=4)
    settings = ExploreSettings(delta_t=3, t_max=6, sparsity=0.5, delta0=0.3, min_fraction=0.25)
    explorer = ChexExplorer(model, torch.randn(2, 1, 12, 12), settings)
    _train(explorer, model, 6)
    total = sum(g.size for g in explorer.groups)
    assert sum(explorer.counts().values()) == round(0.5 * total)
    assert all(explorer.counts()[g.name] >= max(1, g.size // 4) for g in explorer.groups)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_channel_sparsity_outside_zero_one_is_refused(sparsity):
    with pytest.raises(PruneflowError, match=r"in \[0, 1\)"):
        ExploreSettings(delta_t=1, t_max=4, sparsity=sparsity).check()
    with pytest.raises(PruneflowError, match="sparsity"):
        config.updated(chex={"sparsity": sparsity, "flops_reduction": None})


def test_delta_t_beyond_t_max_is_refused():
    with pytest.raises(PruneflowError, match="larger than T_max"):
        ExploreSettings(delta_t=10, t_max=4, flops_reduction=0.5).check()
    with pytest.raises(PruneflowError, match="delta_t"):
        config.updated(chex={"delta_t": 5.0, "t_max": 2.0})
    with pytest.raises(PruneflowError, match="exactly one"):
        ExploreSettings(delta_t=1, t_max=4, flops_reduction=0.5, sparsity=0.5).check()


class _NoBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def test_models_without_batchnorm_are_refused_with_the_reason():
    settings = ExploreSettings(delta_t=1, t_max=4, flops_reduction=0.5)
    with pytest.raises(PruneflowError, match="BatchNorm scales.*conv 'conv1'"):
        ChexExplorer(_NoBN(), torch.randn(2, 1, 8, 8), settings)
    with pytest.raises(PruneflowError, match="no prunable conv channels.*BatchNorm"):
        find_groups(build("lenet300100", 10, (1, 8, 8)), torch.randn(2, 1, 8, 8))


def test_unreachable_budget_is_refused_before_training():
    model = resnet_mini((1, 12, 12), 10, width=4)
    settings = ExploreSettings(delta_t=1, t_max=4, flops_reduction=0.99, min_fraction=0.5)
    with pytest.raises(PruneflowError, match="minimums"):
        ChexExplorer(model, torch.randn(2, 1, 12, 12), settings)
