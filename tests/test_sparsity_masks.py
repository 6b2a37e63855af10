import math

import pytest
import torch
from torch import nn

from pruneflow.errors import PruneflowError
from pruneflow.sparsity import masks as M


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))


LAYERS = ["1", "3"]


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("target", [0.0, 0.2, 0.5, 0.93])
def test_exact_counts_and_nesting(scope, target):
    model = _model()
    scores = M.magnitude_scores(model, LAYERS)
    masks = M.select(scores, target, scope)
    total = sum(m.numel() for m in masks.values())
    pruned = sum(int((~m).sum()) for m in masks.values())
    if scope == "global":
        assert pruned == round(target * total)
    else:
        for m in masks.values():
            assert int((~m).sum()) == round(target * m.numel())
    more = M.select(scores, min(target + 0.05, 0.99), scope, current=masks)
    for n in LAYERS:
        assert not (more[n] & ~masks[n]).any()  # pruned weights never come back


def test_global_magnitude_prunes_the_smallest_weights():
    model = _model()
    scores = M.magnitude_scores(model, LAYERS)
    masks = M.select(scores, 0.5, "global")
    kept = torch.cat([scores[n][masks[n]] for n in LAYERS])
    gone = torch.cat([scores[n][~masks[n]] for n in LAYERS])
    assert gone.max() <= kept.min()


def test_random_scores_are_seeded_and_gradient_scores_real():
    model = _model()
    a, b = M.random_scores(model, LAYERS, 1), M.random_scores(model, LAYERS, 1)
    assert all(torch.equal(a[n], b[n]) for n in LAYERS)
    x, y = torch.randn(8, 20), torch.randint(0, 5, (8,))
    g = M.scores("gradient", model, LAYERS, batches=[(x, y)])
    model.zero_grad()
    nn.functional.cross_entropy(model.eval()(x), y).backward()
    assert torch.allclose(g["3"], (model[3].weight * model[3].weight.grad).abs())


def test_enforcer_keeps_zeros_under_momentum_and_weight_decay():
    model = _model()
    masks = M.select(M.magnitude_scores(model, LAYERS), 0.7)
    enforcer = M.MaskEnforcer(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(
            model(torch.randn(16, 20)), torch.randint(0, 5, (16,))
        ).backward()
        opt.step()
        enforcer.after_step()
    for n, w in M.weights(model, LAYERS).items():
        assert torch.all(w[~masks[n]] == 0)
        buf = opt.state[w]["momentum_buffer"]
        assert torch.all(buf[~masks[n]] == 0)  # momentum never built up for pruned weights
        assert (w[masks[n]] != 0).all()
    assert math.isclose(M.sparsity(masks), 0.7, abs_tol=1e-3)
    enforcer.remove()


def test_bad_input():
    model = _model()
    with pytest.raises(PruneflowError, match="in \\[0, 1\\)"):
        M.select(M.magnitude_scores(model, LAYERS), 1.0)
    with pytest.raises(PruneflowError, match="no prunable layer 'nope'"):
        M.magnitude_scores(model, ["nope"])
    with pytest.raises(PruneflowError, match="unknown pruning score"):
        M.scores("taylor", model, LAYERS)
    with pytest.raises(PruneflowError, match="shape"):
        M.apply(model, {"1": torch.ones(3, dtype=torch.bool)})


def _stable_sort_keep(flat: torch.Tensor, n_prune: int) -> torch.Tensor:
    """The rule written as a sort: drop the first ``n_prune`` of a stable ascending order."""
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.sort(flat, stable=True).indices[:n_prune]] = False
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_selection_drops_what_a_stable_sort_drops_ties_and_masked_weights_included(seed):
    from pruneflow.sparsity.masks import _keep_top

    gen = torch.Generator().manual_seed(seed)
    n = 5000
    # few distinct values, so most of the threshold's scores are ties; some already masked
    flat = torch.randint(0, 7, (n,), generator=gen).float()
    flat[torch.randperm(n, generator=gen)[:400]] = float("-inf")
    if seed % 2:
        flat = torch.rand(n, generator=gen)  # distinct scores
    for n_prune in (0, 1, 399, 400, 401, 2500, n - 1, n):
        keep = _keep_top(flat, n_prune)
        assert int((~keep).sum()) == n_prune
        assert torch.equal(keep, _stable_sort_keep(flat, n_prune)), n_prune
    with_nan = flat.clone()
    with_nan[3] = float("nan")
    assert torch.equal(_keep_top(with_nan, 2500), _stable_sort_keep(with_nan, 2500))
