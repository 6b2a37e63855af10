"""CHEX building blocks on constructed inputs: CSS, regrow sampling, schedule, re-allocation."""

import math

import pytest
import torch

from pruneflow.chex import (
    FlopsModel,
    allocate,
    css_select,
    find_groups,
    leverage_scores,
    projection_errors,
    regrow_fraction,
    regrow_probabilities,
    sample_regrow,
    uniform_allocation,
)
from pruneflow.chex.realloc import channel_budget
from pruneflow.chex.schedule import exploration_iterations
from pruneflow.errors import PruneflowError
from pruneflow.models.resnet_mini import resnet_mini


def _basis(n: int, i: int) -> torch.Tensor:
    e = torch.zeros(n)
    e[i] = 1.0
    return e


def test_css_keeps_the_columns_that_span_the_layer():
    # strong columns 0..2 along e1..e3, weak near-copies 3..5 of them
    strong = [5.0 * _basis(10, i) for i in range(3)]
    weak = [0.1 * _basis(10, i) + 0.01 * _basis(10, 5 + i) for i in range(3)]
    w = torch.stack(strong + weak, dim=1)
    assert css_select(w, 3).tolist() == [0, 1, 2]
    scores = leverage_scores(w, 3)
    assert scores[:3].min() > 0.99 and scores[3:].max() < 0.01
    assert math.isclose(float(scores.sum()), 3.0, rel_tol=1e-5)  # rank-3 scores sum to k


def test_css_prefers_a_unique_channel_over_a_larger_duplicate():
    a, b = 3.0 * _basis(6, 0), _basis(6, 1)
    w = torch.stack([a, a, b], dim=1)  # L1 norms would keep both copies of a
    assert leverage_scores(w, 2).tolist() == pytest.approx([0.5, 0.5, 1.0], abs=1e-6)
    assert css_select(w, 2).tolist() == [0, 2]  # the tie between the copies goes to index 0
    only = torch.tensor([False, True, True])
    assert css_select(w, 1, candidates=only).tolist() == [1]  # masked columns never compete
    assert css_select(w, 5, candidates=only).tolist() == [1, 2]


def test_projection_errors_and_regrow_probabilities():
    e1, e2, e3 = (_basis(4, i) for i in range(3))
    w = torch.stack([e1, e2, e1 + e2, e3, e1 + 2 * e3], dim=1)
    errors = projection_errors(w, torch.tensor([0, 1]), torch.tensor([2, 3, 4]))
    assert errors.tolist() == pytest.approx([0.0, 1.0, 4.0], abs=1e-6)
    assert regrow_probabilities(errors).tolist() == pytest.approx([0.0, 0.2, 0.8], abs=1e-6)
    assert regrow_probabilities(torch.zeros(4)).tolist() == [0.25] * 4


def test_regrow_samples_without_replacement_in_proportion():
    errors = torch.tensor([0.0, 1.0, 4.0])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_regrow(errors, 1, gen) for _ in range(4000)]).flatten()
    freq = torch.bincount(draws, minlength=3).double() / draws.numel()
    assert freq[0] == 0 and abs(float(freq[2]) - 0.8) < 0.03
    assert sorted(sample_regrow(errors, 2, gen).tolist()) == [1, 2]  # distinct, the zero last
    assert sorted(sample_regrow(errors, 3, gen).tolist()) == [0, 1, 2]
    assert sample_regrow(errors, 0, gen).numel() == 0


def test_cosine_regrow_schedule():
    n, d0 = 8, 0.3
    values = [regrow_fraction(t, n, d0) for t in range(n + 1)]
    assert values[0] == pytest.approx(d0) and values[n] == pytest.approx(0.0, abs=1e-12)
    assert values[n // 2] == pytest.approx(d0 / 2)
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[1] == pytest.approx(0.5 * (1 + math.cos(math.pi / n)) * d0)


def test_exploration_iterations_and_bad_schedules():
    assert exploration_iterations(28, 1.0, 10.0, 20) == (28, 280)
    assert exploration_iterations(10, 0.25, 1.0, 2) == (2, 10)  # rounded
    assert exploration_iterations(28, 1e-9, 1e-9, 20) == (1, 1)  # at least one iteration
    with pytest.raises(PruneflowError, match="larger than chex.t_max"):
        exploration_iterations(28, 3.0, 2.0, 20)
    with pytest.raises(PruneflowError, match="beyond the end of training"):
        exploration_iterations(28, 1.0, 30.0, 20)


def test_allocation_respects_minimums_and_a_channel_budget():
    scores = [
        torch.tensor([0.9, 0.8, 0.7, 0.6]),
        torch.tensor([0.01, 0.02]),
        torch.tensor([0.5, 0.4]),
    ]
    active = [torch.ones(4, dtype=torch.bool), torch.ones(2, dtype=torch.bool)]
    active.append(torch.tensor([True, False]))
    counts = allocate(scores, active, [1, 1, 1], channel_budget(5))
    # minimums first (one each), then the global ranking: 0.8, 0.7 from group 0
    assert counts == [3, 1, 1] and sum(counts) == 5
    assert allocate(scores, active, [1, 1, 1], channel_budget(100)) == [4, 2, 1]  # only active
    with pytest.raises(PruneflowError, match="minimums"):
        allocate(scores, active, [2, 2, 1], channel_budget(4))


def test_allocation_skips_a_channel_too_expensive_for_what_is_left():
    # group 0 channels cost 10, group 1 channels cost 1, budget 25
    def fits(counts):
        return 10 * counts[0] + counts[1] <= 25

    scores = [torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0.5, 0.4, 0.3, 0.2])]
    active = [torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool)]
    # ranking after the minimums: 0.8 (g0, fits), 0.7 (g0, 31 > 25: skipped), then g1's three
    assert allocate(scores, active, [1, 1], fits) == [2, 4]


def test_allocation_meets_a_flops_budget_tightly():
    model = resnet_mini((1, 12, 12), 10, width=4)
    groups = find_groups(model, torch.zeros(2, 1, 12, 12))
    fm = FlopsModel(model, (1, 12, 12), groups)
    budget = 0.3 * fm.dense()
    gen = torch.Generator().manual_seed(1)
    scores = [torch.rand(g.size, generator=gen) for g in groups]
    active = [torch.ones(g.size, dtype=torch.bool) for g in groups]
    minimum = [1] * len(groups)
    counts = allocate(scores, active, minimum, fm.fits(budget))
    assert fm.flops(counts) <= budget and all(c >= 1 for c in counts)
    for g, group in enumerate(groups):  # maximal: no group could take one more channel
        if counts[g] < group.size:
            assert fm.flops([c + (i == g) for i, c in enumerate(counts)]) > budget
    uniform = uniform_allocation([g.size for g in groups], minimum, fm.fits(budget))
    assert fm.flops(uniform) <= budget and fm.flops(uniform) > 0.9 * budget
    ratios = [c / g.size for c, g in zip(uniform, groups, strict=True)]
    assert max(ratios) - min(ratios) <= 0.5  # near-uniform (channel rounding on 4..16 widths)
