"""The search's short fine-tuning of its best profiles, a new search per re-aim and uniform
widths kept at the floor when the next grid level jumps past the window
(pruneflow.structured.search, pruneflow.structured.verify)."""

import numpy as np
import pytest
import torch
from test_structured_table_search import _synthetic_table
from test_structured_verify import _predict, _table

from pruneflow.config import (
    StructuredReconParams,
    StructuredSearchParams,
    StructuredVerifyParams,
    TrainParams,
)
from pruneflow.data.datasets import ImageData
from pruneflow.errors import PruneflowError
from pruneflow.models import build
from pruneflow.structured.database import build_database
from pruneflow.structured.realize import realize
from pruneflow.structured.search import (
    FinetunedLoss,
    WidthLoss,
    budget,
    search_widths,
    top_profiles,
)
from pruneflow.structured.verify import (
    grid_bound,
    meet_target,
    reaimed,
    searched_rule,
    uniform_rule,
)
from pruneflow.structured.widths import fractions, structured_groups, width_grid

SHAPE = (1, 12, 12)
SEARCH = StructuredSearchParams(candidates=6, max_no_improvement=3, buckets=500)


def _toy_data(n: int = 384) -> ImageData:
    """Ten prototype images plus noise: a few SGD steps learn it."""
    gen = np.random.default_rng(0)
    protos = gen.integers(0, 256, size=(10, *SHAPE))
    labels = np.arange(n) % 10
    noise = gen.normal(0, 40, size=(n, *SHAPE))
    raw = np.clip(protos[labels] + noise, 0, 255).astype(np.uint8)
    return ImageData("toy", 10, SHAPE, labels, None, raw=torch.from_numpy(raw))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    data = _toy_data()
    model = build("resnet_mini", 10, SHAPE).eval()
    example = torch.zeros(1, *SHAPE)
    groups, _ = structured_groups(model, example)
    grid = fractions(3, 0.25)
    widths = width_grid(groups, grid, 1)
    calib = data.images(np.arange(64))
    db = build_database(
        tmp_path_factory.mktemp("db"),
        model,
        "resnet_mini",
        groups,
        widths,
        grid,
        [calib],
        StructuredReconParams(rows=1024),
    )
    val = np.arange(320, 384)
    batches = [(data.images(val), torch.as_tensor(data.targets[val]))]
    table = _synthetic_table(groups, widths, grid)
    return data, model, example, groups, db, batches, table


def test_top_profiles_are_the_best_distinct_widths():
    widths = np.array([[8, 4, 2, 2], [16, 8, 4, 2]])  # group 0: levels 2 and 3 are one width
    scored = {(2, 1): 0.5, (3, 1): 0.5, (0, 3): 0.9, (1, 1): 0.4, (0, 0): 0.7}
    top = top_profiles(scored, widths, 3)
    assert top == [((1, 1), 0.4), ((2, 1), 0.5), ((0, 0), 0.7)]  # (3, 1) repeats (2, 1)
    assert top_profiles(scored, widths, 10)[-1] == ((0, 3), 0.9)
    assert len(top_profiles(scored, widths, 10)) == 4


def test_short_finetuning_trains_the_thinned_model_and_scores_it_held_out(setup):
    data, model, example, groups, db, batches, _ = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = TrainParams(epochs=3, batch_size=32, lr=0.05, seed=0)
    split = (data, np.arange(320), data.targets)
    levels = [1] * len(groups)
    ft = FinetunedLoss(model, groups, db, example, split, recipe, 5, batches)
    after = ft(levels)
    thin = realize(model, groups, db, levels, example)
    with torch.no_grad():
        untrained = float(torch.nn.functional.cross_entropy(thin(batches[0][0]), batches[0][1]))
    assert after < untrained  # five steps on the train split lower the held-out loss
    assert ft(levels) == after and list(ft.memo) == [tuple(levels)]
    # seeded: a new instance fine-tunes to the same loss; fewer steps, another one
    again = FinetunedLoss(model, groups, db, example, split, recipe, 5, batches)(levels)
    assert again == pytest.approx(after, rel=1e-5)
    one = FinetunedLoss(model, groups, db, example, split, recipe, 1, batches)(levels)
    assert one != pytest.approx(after, rel=1e-3)
    # the dense model is untouched
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(PruneflowError, match="at least one step"):
        FinetunedLoss(model, groups, db, example, split, recipe, 0, batches)


def test_search_keeps_the_candidate_best_after_fine_tuning_not_the_best_score(setup):
    _, model, _, groups, db, batches, table = setup
    loss = WidthLoss(model, groups, db, batches)
    asked = []

    def finetuned(levels):  # reverses the search's order: its worst candidate learns best
        asked.append(tuple(levels))
        return -loss(levels)

    plain = search_widths(table, loss, 1.6, SEARCH.model_copy(update={"finetune_top_k": 0}))
    assert plain.finetuned == ()
    plan = search_widths(table, loss, 1.6, SEARCH, finetuned=finetuned)
    # the same search: the short fine-tuning only chooses among what it scored
    assert plan.result.history == plain.result.history
    assert len(plan.finetuned) == min(4, plan.result.distinct_profiles) >= 2
    assert [f.levels for f in plan.finetuned] == asked
    scores = [f.calib_loss for f in plan.finetuned]
    assert scores == sorted(scores) and scores[0] == plain.calib_loss
    assert len({f.widths for f in plan.finetuned}) == len(plan.finetuned)
    best = plan.finetuned[-1]  # the worst score of the top 4, the best after fine-tuning
    assert best.finetuned_loss == min(f.finetuned_loss for f in plan.finetuned)
    assert plan.levels == best.levels != plain.levels and plan.calib_loss == best.calib_loss
    assert plan.calib_loss == pytest.approx(loss(plan.levels))
    disc = budget(table, 1.6, SEARCH.buckets)
    for f in plan.finetuned:  # every candidate within the budget
        prev = (0, *f.levels[:-1])
        spent = sum(
            int(disc.times[g, p, s]) for g, (p, s) in enumerate(zip(prev, f.levels, strict=True))
        )
        assert spent <= disc.budget


def test_each_re_aim_runs_a_new_search():
    table = _table()
    aims = []

    def score(levels):  # a loss of the profile alone: thinning group 1 costs the most
        return float(np.dot([0.2, 0.9, 0.5], np.asarray(levels, dtype=float) ** 2))

    def search(aim):
        aims.append(aim)
        return search_widths(table, score, aim, SEARCH)

    solve, plans = searched_rule(search)
    measure = lambda lv: 0.88 * _predict(table, lv)  # noqa: E731 the table over-promises
    kept, tried = meet_target(1.5, solve, table, measure, 3, 0.03)
    assert len(tried) >= 2
    assert [a.aim for a in tried] == aims  # one search per attempt, each for its own aim
    for a in tried:
        assert a.levels == search_widths(table, score, a.aim, SEARCH).levels
        assert plans[a.levels].levels == a.levels
    assert kept.measured >= 1.5 * (1 - 0.03**2)
    solve(tried[-1].aim)  # asked again (the floor check does): no new search
    assert len(aims) == len(tried)
    assert solve(table.max_speedup() * 2) is None  # beyond the table's reach


def test_uniform_widths_keep_the_level_short_of_the_window_over_a_jump_past_it():
    table = _table()
    solve = uniform_rule(table)
    target = 1.45
    level = solve(target * 1.03)[0]  # the level the table rates fast enough

    def measure(short):
        def m(levels):  # that level measures `short` x target, the next ones jump past
            return (
                short * target if levels[0] <= level else (1.5 + 0.1 * (levels[0] - level)) * target
            )

        return m

    v = StructuredVerifyParams()
    plain, tried = meet_target(target, solve, table, measure(0.97), v.rounds, v.tolerance)
    assert [a.levels[0] for a in tried] == [level, level + 1]
    assert plain.levels[0] == level + 1 and plain.measured == pytest.approx(1.6 * target)
    kept, rows = reaimed("toy", "uniform", target, solve, table, measure(0.97), v, uniform=True)
    assert kept.levels[0] == level and kept.measured == pytest.approx(0.97 * target)
    assert (kept, tried) == grid_bound(plain, tried, target, v.tolerance, v.floor)
    assert [r["levels"][0] for r in rows] == [level, level + 1]  # every attempt still recorded
    # below the floor (0.95): the jump stays
    low, _ = reaimed("toy", "uniform", target, solve, table, measure(0.9), v, uniform=True)
    assert low.levels[0] == level + 1
    # a level inside the window: kept as before
    ok, _ = reaimed("toy", "uniform", target, solve, table, measure(1.01), v, uniform=True)
    assert ok.levels[0] == level and ok.measured == pytest.approx(1.01 * target)
    # the search's profiles are not grid-bound: without `uniform` the jump is kept
    other, _ = reaimed("toy", "search", target, solve, table, measure(0.97), v)
    assert other.levels[0] == level + 1


def test_uniform_widths_measure_the_wider_level_the_re_aim_never_asked_for():
    table = _table()
    solve = uniform_rule(table)
    target = 1.45
    v = StructuredVerifyParams()

    def under(levels):  # the table under-promises every level by 20%
        return 1.2 * _predict(table, levels)

    plain, tried = meet_target(target, solve, table, under, v.rounds, v.tolerance)
    # the re-aim asks for the widest level *predicted* to reach the corrected aim: one level
    # wider never comes up, and the kept one runs well past the window
    level = plain.levels[0]
    assert plain.measured > target * 1.03**2
    assert (level - 1,) * 3 not in [a.levels for a in tried]
    wider = under([level - 1] * 3)
    assert 0.95 * target <= wider < target * 1.03 * 0.97  # short of the window, above the floor
    kept, rows = reaimed("toy", "uniform", target, solve, table, under, v, uniform=True)
    assert kept.levels == (level - 1,) * 3 and kept.measured == pytest.approx(wider)
    assert rows[-1]["levels"] == [level - 1] * 3 and len(rows) == len(tried) + 1
    assert rows[-1]["aim"] == pytest.approx(_predict(table, [level - 1] * 3))
    # no measurements left for it: the jump stays
    none, _ = reaimed(
        "toy",
        "uniform",
        target,
        solve,
        table,
        under,
        v.model_copy(update={"rounds": 0}),
        uniform=True,
    )
    assert none.levels[0] >= level
