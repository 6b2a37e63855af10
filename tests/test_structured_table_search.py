"""Structured timing table (schema, host check) and the search over it."""

import numpy as np
import pandas as pd
import pytest
import torch

from pruneflow.config import SearchParams, StructuredReconParams, StructuredTimingParams
from pruneflow.errors import PruneflowError
from pruneflow.models import build
from pruneflow.structured.database import build_database
from pruneflow.structured.search import WidthLoss, budget, search_widths
from pruneflow.structured.timing import (
    COLUMNS,
    FORMAT,
    StructuredTable,
    measure_table,
    pool_same_widths,
    read_table,
    write_table,
)
from pruneflow.structured.widths import fractions, structured_groups, width_grid
from pruneflow.timing.table import host_description

SHAPE = (1, 12, 12)
FAST = StructuredTimingParams(
    batch_size=4, rounds=1, warmup=0, min_repeats=1, max_repeats=2, max_seconds=0.001
)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build("resnet_mini", 10, SHAPE).eval()
    groups, wiring = structured_groups(model, torch.zeros(1, *SHAPE))
    grid = fractions(3, 0.25)
    return model, groups, wiring, grid, width_grid(groups, grid, 1)


def test_measured_table_schema_roundtrip_and_host_check(setup, tmp_path):
    model, groups, wiring, grid, widths = setup
    table = measure_table(model, "resnet_mini", groups, wiring, widths, grid, SHAPE, FAST)
    assert table.times_ms.shape == (len(groups), 3, 3)
    assert (table.times_ms > 0).all()
    assert np.array_equal(table.widths, widths)
    assert table.meta["host"]["threads"] == 1
    path = write_table(tmp_path / "t.parquet", table)
    names = [g.name for g in groups]
    again = read_table(path, "resnet_mini", names, host=host_description(1))
    assert np.array_equal(again.times_ms, table.times_ms)
    assert list(again.frame.columns) == list(COLUMNS)
    with pytest.raises(PruneflowError, match="measured on another host") as err:
        read_table(path, "resnet_mini", names, host={**host_description(1), "cpu": "Other CPU"})
    assert "\n" not in str(err.value)
    with pytest.raises(PruneflowError, match="threads must be 1"):
        measure_table(
            model,
            "resnet_mini",
            groups,
            wiring,
            widths,
            grid,
            SHAPE,
            FAST.model_copy(update={"threads": 2}),
        )


def test_levels_of_one_width_get_one_time(setup):
    model, groups, wiring, grid, _ = setup
    # the floor repeats widths: level 2 keeps as many channels as level 1 in the 8- and
    # 16-channel groups (5 and 10), not in the 32-channel ones (20 and 8)
    widths = width_grid(groups, grid, 1, min_channels=5)
    repeated = widths[:, 1] == widths[:, 2]
    assert repeated.tolist() == [True] * 4 + [False] * 2
    table = measure_table(model, "resnet_mini", groups, wiring, widths, grid, SHAPE, FAST)
    t = table.times_ms
    for g in range(len(groups)):
        if repeated[g]:  # own width repeated
            assert np.array_equal(t[g, :, 1], t[g, :, 2])
        if g and repeated[g - 1]:  # previous group's width repeated
            assert np.array_equal(t[g, 1, :], t[g, 2, :])
    # the raw measurements stay as measured
    raw = table.frame.sort_values(["group_index", "prev_level", "level"])["time_ms_raw"]
    assert raw.nunique() > 1


def test_pool_same_widths_averages_one_configuration():
    widths = np.array([[4, 2, 2], [6, 3, 3]])
    times = np.arange(18, dtype=np.float64).reshape(2, 3, 3)
    pooled = pool_same_widths(times, widths)
    assert pooled[0, 0, 1] == pooled[0, 2, 2] == np.mean(times[0][:, 1:])  # group 0: any prev
    assert pooled[1, 0, 0] == times[1, 0, 0]
    assert pooled[1, 1, 1] == pooled[1, 2, 2] == np.mean(times[1][1:, 1:])
    assert pooled[1, 1, 0] == pooled[1, 2, 0] == np.mean(times[1][1:, 0])


def _synthetic_table(groups, widths, grid):
    """Times proportional to in x out widths (a chain's cost), deterministic."""
    rows = []
    n = len(grid)
    for gi, g in enumerate(groups):
        for p in range(n):
            for s in range(n):
                prev = widths[gi - 1, p] / widths[gi - 1, 0] if gi else 1.0
                own = widths[gi, s] / widths[gi, 0]
                rows.append(
                    {
                        "group": g.name,
                        "group_index": gi,
                        "prev_level": p,
                        "level": s,
                        "fraction": grid[s],
                        "channels": int(widths[gi, s]),
                        "time_ms": 1.0 * prev * own,
                        "time_ms_raw": 1.0 * prev * own,
                        "time_ms_p10": 0.9,
                        "time_ms_p90": 1.1,
                        "repeats": 3,
                    }
                )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    meta = {
        "format": FORMAT,
        "model": "resnet_mini",
        "groups": [g.name for g in groups],
        "levels": list(grid),
        "dense_total_ms": len(groups) + 1.0,
        "prunable_dense_ms": float(len(groups)),
        "remainder_ms": 1.0,
        "host": host_description(1),
    }
    return StructuredTable(frame, meta)


def test_search_meets_the_budget_and_unreachable_target_names_the_reach(setup, tmp_path):
    model, groups, _, grid, widths = setup
    table = _synthetic_table(groups, widths, grid)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, *SHAPE, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    db = build_database(
        tmp_path / "db",
        model,
        "resnet_mini",
        groups,
        widths,
        grid,
        [x],
        StructuredReconParams(rows=2048),
    )
    loss = WidthLoss(model, groups, db, [(x, y)])
    dense_loss = loss([0] * len(groups))
    plan = search_widths(
        table, loss, 1.5, SearchParams(candidates=4, max_no_improvement=3, buckets=500)
    )
    assert plan.predicted_speedup >= 1.5 * (1 - 1e-9)
    assert table.dense_total_ms / table.predict_ms(plan.levels) == pytest.approx(
        plan.predicted_speedup
    )
    assert plan.calib_loss == pytest.approx(loss(plan.levels))
    assert plan.calib_loss != dense_loss
    reach = table.max_speedup()
    with pytest.raises(PruneflowError, match=f"at most {reach:.3g}x") as err:
        budget(table, reach * 1.1, 500)
    assert "\n" not in str(err.value)
