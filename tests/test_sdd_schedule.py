"""Sparse double descent: the pruning schedule and the params' validation."""

import math

import pytest

from pruneflow import config
from pruneflow.errors import PruneflowError
from pruneflow.sdd.schedule import level_sparsity, num_levels, schedule


def test_levels_remove_a_fraction_of_what_remains():
    levels = schedule(0.2, 0.9)
    assert levels[:4] == pytest.approx([0.0, 0.2, 0.36, 0.488])
    # each round keeps 80 % of the weights the previous round kept
    remaining = [1 - s for s in levels]
    assert all(b / a == pytest.approx(0.8) for a, b in zip(remaining, remaining[1:], strict=False))
    assert levels[-1] >= 0.9 > levels[-2]
    assert len(levels) - 1 == num_levels(0.2, 0.9) == math.ceil(math.log(0.1) / math.log(0.8))


def test_exact_hits_do_not_add_a_level_and_the_last_level_is_not_clipped():
    assert num_levels(0.5, 0.75) == 2  # 1 - 0.5^2 == 0.75 exactly: no third level
    assert schedule(0.5, 0.8)[-1] == pytest.approx(0.875)  # not clipped to 0.8
    assert num_levels(0.9, 0.5) == 1


def test_default_schedule_reaches_the_collapsed_region_of_lenet():
    p = config.updated()
    levels = schedule(p.sdd.prune_fraction, p.sdd.final_sparsity)
    assert levels[-1] > 0.995  # the collapsed phase of lenet300100 lies beyond 99.5 %


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_schedule_rejects_fractions_outside_0_1(fraction):
    with pytest.raises(PruneflowError, match="prune_fraction"):
        schedule(fraction, 0.9)
    with pytest.raises(PruneflowError, match="prune_fraction"):
        level_sparsity(fraction, 2)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("final_sparsity", 1.0, "sdd.final_sparsity"),
        ("final_sparsity", 1.2, "sdd.final_sparsity"),
        ("prune_fraction", 0.0, "sdd.prune_fraction"),
        ("prune_fraction", 1.0, "sdd.prune_fraction"),
        ("modes", ["rewind", "lottery"], "sdd.modes"),
        ("methods", ["magnitude", "taylor"], "sdd.methods"),
        ("rewind_epoch", 31, "sdd.rewind_epoch.*at most sdd.train.epochs"),
        ("seeds", [0, 0], "sdd.seeds"),
        ("scope", "per-layer", "sdd.scope"),
    ],
)
def test_bad_sdd_params_fail_clearly_before_any_work(key, value, match):
    with pytest.raises(PruneflowError, match=match):
        config.updated(sdd={key: value})


def test_rewind_epoch_is_checked_against_the_sections_own_training():
    assert config.updated(sdd={"train": {"epochs": 5}, "rewind_epoch": 5}).sdd.rewind_epoch == 5
    with pytest.raises(PruneflowError, match="rewind_epoch"):
        config.updated(sdd={"train": {"epochs": 5}, "rewind_epoch": 6})


def test_unknown_sdd_key_is_rejected():
    with pytest.raises(PruneflowError, match="sdd.epochs"):
        config.from_dict({"sdd": {"epochs": 3}})


def test_scoped_view_takes_data_noise_model_and_dense_training_from_sdd():
    p = config.updated(sdd={"dataset": "digits", "noise_rate": 0.3, "train": {"epochs": 7}})
    view = config.scoped(p, "sdd:lenet300100")
    assert (view.data.dataset, view.noise.rate, view.model.name) == ("digits", 0.3, "lenet300100")
    assert view.train.epochs == 7 and view.train.optimizer == p.sdd.train.optimizer
    with pytest.raises(PruneflowError, match="sdd.models"):
        config.scoped(p, "sdd:resnet50")
