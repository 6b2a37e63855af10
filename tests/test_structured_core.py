"""Structured profiles: groups and width grids, the database, stitching and realization."""

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from pruneflow.config import StructuredParams, StructuredReconParams
from pruneflow.errors import PruneflowError
from pruneflow.models import build
from pruneflow.structured.baselines import minimum_widths
from pruneflow.structured.database import StructuredDB, build_database
from pruneflow.structured.realize import realize
from pruneflow.structured.widths import (
    chain_order,
    fractions,
    group_widths,
    structured_groups,
    width_grid,
)

SHAPE = (1, 12, 12)


def _resnet():
    torch.manual_seed(0)
    model = build("resnet_mini", 10, SHAPE).eval()
    # non-trivial BN statistics, so that stitching errors would show
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model


def test_fractions_and_rounding():
    grid = fractions(4, 0.25)
    assert grid == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert group_widths("g", 16, grid, 1) == [16, 12, 8, 4]
    assert group_widths("g", 16, grid, 8) == [16, 16, 8, 8]  # 12 and 4 round half up
    assert group_widths("g", 10, grid, 4) == [10, 8, 4, 4]


def test_level_rounding_to_zero_is_one_clear_error():
    with pytest.raises(PruneflowError, match="rounds to 0 channels") as err:
        group_widths("stage1.conv1", 8, fractions(10, 0.1), 4)
    assert "\n" not in str(err.value) and "stage1.conv1" in str(err.value)


def test_min_channels_drops_narrower_levels():
    grid = fractions(10, 0.1)
    assert group_widths("g", 8, grid, 1) == [8, 7, 6, 6, 5, 4, 3, 2, 2, 1]
    # the one-channel level repeats the narrowest level left (2 channels)
    assert group_widths("g", 8, grid, 1, min_channels=2) == [8, 7, 6, 6, 5, 4, 3, 2, 2, 2]
    assert group_widths("g", 8, grid, 1, min_channels=4) == [8, 7, 6, 6, 5, 4, 4, 4, 4, 4]
    assert group_widths("g", 8, grid, 1, min_channels=8) == [8] * 10
    # rounded to a multiple, the floor is the narrowest multiple at or above it
    assert group_widths("g", 16, fractions(4, 0.25), 4, min_channels=5) == [16, 12, 8, 8]
    groups, _ = structured_groups(_resnet(), torch.zeros(1, *SHAPE))
    widths = width_grid(groups, grid, 1, min_channels=3)
    assert widths.shape == (len(groups), 10) and widths.min() == 3


def test_min_channels_leaving_no_level_is_one_clear_error():
    with pytest.raises(PruneflowError, match="fewer than structured.min_channels=9") as err:
        group_widths("stage1.conv1", 8, fractions(10, 0.1), 1, min_channels=9)
    assert "\n" not in str(err.value) and "stage1.conv1" in str(err.value)
    with pytest.raises(ValidationError):
        StructuredParams(min_channels=0)


def test_chex_minimum_obeys_min_channels():
    groups, _ = structured_groups(_resnet(), torch.zeros(1, *SHAPE))
    sizes = [g.size for g in groups]
    assert minimum_widths(groups, 0.1, 1) == [max(1, -(-s // 10)) for s in sizes]
    assert minimum_widths(groups, 0.1, 3) == [max(3, -(-s // 10)) for s in sizes]


def test_groups_follow_residual_sums():
    model = _resnet()
    groups, wiring = structured_groups(model, torch.zeros(1, *SHAPE))
    by_name = {g.name: g for g in groups}
    assert by_name["conv1"].producers == ["conv1", "stage1.conv2"]
    assert by_name["stage2.conv2"].producers == ["stage2.conv2", "stage2.shortcut.0"]
    assert wiring.inputs["stage2.shortcut.0"] == "conv1"
    assert wiring.outputs["fc"] is None and wiring.charged("fc") == "stage3.conv2"
    # chain order: the stage-1 inner group first, so that stage 2's first conv (a 3x3 reading
    # the stage-1 sum) joins neighbours; only the 1x1 shortcut projections are off the chain
    assert [g.name for g in groups] == [
        "stage1.conv1",
        "conv1",
        "stage2.conv1",
        "stage2.conv2",
        "stage3.conv1",
        "stage3.conv2",
    ]
    assert wiring.charged("stage1.conv2") == "conv1"  # the later group of the two in that order
    assert wiring.charged("stage2.conv1") == "stage2.conv1"
    assert wiring.charged("conv1") == "conv1"
    off = [
        layer
        for layer in wiring.inputs
        if wiring.inputs[layer] is not None
        and wiring.outputs[layer] is not None
        and abs(wiring.order[wiring.inputs[layer]] - wiring.order[wiring.outputs[layer]]) != 1
    ]
    assert off == ["stage2.shortcut.0", "stage3.shortcut.0"]


def test_chain_order_keeps_a_chain_and_minimizes_off_chain_cost():
    chain_in = {"a": None, "b": "a", "c": "b"}
    chain_out = {"a": "a", "b": "b", "c": "c"}
    assert chain_order(["a", "b", "c"], chain_in, chain_out, {}) == ["a", "b", "c"]
    # a -> b, a -> c (expensive), b -> c (cheap): c must sit next to a
    inputs = {"pa": None, "ab": "a", "ac": "a", "bc": "b"}
    outputs = {"pa": "a", "ab": "b", "ac": "c", "bc": "c"}
    cost = {"ab": 5.0, "ac": 10.0, "bc": 1.0}
    assert chain_order(["a", "b", "c"], inputs, outputs, cost) == ["b", "a", "c"]


def test_model_without_channels_is_one_clear_error():
    mlp = build("lenet300100", 10, (1, 8, 8))
    with pytest.raises(PruneflowError, match="structured pruning cannot thin MLP") as err:
        structured_groups(mlp, torch.zeros(1, 1, 8, 8))
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    model = _resnet()
    example = torch.zeros(1, *SHAPE)
    groups, _ = structured_groups(model, example)
    grid = fractions(3, 0.25)
    widths = width_grid(groups, grid, 1)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(32, *SHAPE, generator=gen) for _ in range(2)]
    root = tmp_path_factory.mktemp("sdb")
    db = build_database(
        root, model, "resnet_mini", groups, widths, grid, batches, StructuredReconParams(rows=4096)
    )
    return model, groups, widths, db, batches, root


def test_database_layout_and_reopen(database):
    model, groups, widths, db, _, root = database
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["index.parquet"] + [f"{g.name}.safetensors" for g in groups]
    )
    again = StructuredDB.open(root, "resnet_mini", [g.name for g in groups])
    for gi, g in enumerate(groups):
        for level in range(widths.shape[1]):
            keep = again.keep(g.name, level)
            assert keep.numel() == widths[gi, level]
            assert torch.equal(keep, keep.sort().values)
    with pytest.raises(PruneflowError, match="not smallcnn"):
        StructuredDB.open(root, "smallcnn", [g.name for g in groups])


def test_refit_beats_masking(database, tmp_path):
    model, groups, widths, db, batches, _ = database
    masked = build_database(
        tmp_path,
        model,
        "resnet_mini",
        groups,
        widths,
        [1.0, 0.6, 0.25],
        batches,
        StructuredReconParams(rows=4096, max_columns=1),
    )
    a = db.index.set_index(["group", "level", "consumer"])["rel_error"]
    b = masked.index.set_index(["group", "level", "consumer"])["rel_error"]
    assert db.index["refit"].any() and not masked.index["refit"].any()
    assert (a <= b + 1e-9).all()
    assert (a.xs(2, level="level") < b.xs(2, level="level")).all()
    assert (a.xs(0, level="level") < 1e-6).all()  # the dense level loses nothing


def test_stitched_model_equals_realized_model(database):
    model, groups, widths, db, batches, _ = database
    levels = [2, 1, 0, 2, 1, 2]
    example = torch.zeros(1, *SHAPE)
    thin = realize(model, groups, db, levels, example)
    import copy

    stitched = db.stitch(copy.deepcopy(model), groups, levels).eval()
    x = batches[0]
    with torch.no_grad():
        assert torch.allclose(thin(x), stitched(x), atol=1e-5)
    convs = {n: m for n, m in thin.named_modules() if isinstance(m, nn.Conv2d)}
    for gi, g in enumerate(groups):
        for p in g.producers:
            assert convs[p].out_channels == widths[gi, levels[gi]]
    assert sum(p.numel() for p in thin.parameters()) < sum(p.numel() for p in model.parameters())


def test_css_importance_keeps_k_channels():
    model = _resnet()
    groups, _ = structured_groups(model, torch.zeros(1, *SHAPE))
    from pruneflow.structured.database import keep_channels

    modules = dict(model.named_modules())
    for g in groups:
        k = max(1, g.size // 2)
        css = keep_channels(g, modules, k, "css")
        l1 = keep_channels(g, modules, k, "l1")
        assert css.numel() == l1.numel() == k
        assert len(set(css.tolist())) == k


@pytest.mark.parametrize("name", ["resnet_mini", "smallcnn"])
def test_thin_copy_equals_chex_extraction(name):
    from pruneflow.chex.extract import extract
    from pruneflow.structured.widths import thin_copy

    torch.manual_seed(1)
    model = build(name, 10, SHAPE).eval()
    example = torch.zeros(1, *SHAPE)
    groups, _ = structured_groups(model, example)
    gen = torch.Generator().manual_seed(0)
    keep = {
        g.name: torch.randperm(g.size, generator=gen)[: max(1, g.size // 3)].sort().values
        for g in groups
    }
    masks = {g.name: torch.isin(torch.arange(g.size), keep[g.name]) for g in groups}
    a = extract(model, groups, masks, example).eval()
    b = thin_copy(model, groups, keep).eval()
    x = torch.randn(4, *SHAPE, generator=gen)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-5)
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
