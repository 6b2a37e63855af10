"""Prune your own model, end to end: a torchvision resnet18 and a user module from a file
under tests/, each with weights trained and saved here, on a small ImageFolder written here;
SPDY (profile, database, search, one-shot, gradual pruning) with tiny settings, then export
and check the ONNX models in onnxruntime against the torch models loaded from the export.

The speedup target is set from the timing table the same run measured: halfway between 1x
and the most its table says the pruned layers can give (every layer at its fastest level).
A fixed target (1.02x) made the test a bet on how much a sparse kernel beats dense on a loaded
host for resnet18's first stage at 8x8 maps (1.005-1.015x at 95%); what the test checks is
the pipeline, so it asserts what the run itself promises: the table finds a sparse level
faster than dense, the realized model's predicted speedup meets the target, and its measured
speedup agrees with the prediction within the stated tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from pruneflow import api, config, layout
from pruneflow.cli import app
from pruneflow.data import load_dataset
from pruneflow.io import parquet_metadata, read_parquet
from pruneflow.models import build
from pruneflow.spdy.dp import predicted_speedup
from pruneflow.spdy.paths import RESULTS_COLUMNS, results_file
from pruneflow.steps import STEPS
from pruneflow.steps.export import spdy_export_dir
from pruneflow.timing import read_timing_table, time_matrix

REPO = Path(__file__).resolve().parent.parent
USER = "tests.user_models.branchy:make"
RESNET = "torchvision:resnet18"
# resnet18 at 32x32, the user's module at 16x16
SIZES = {RESNET: 32, USER: 16}
# measured / predicted speedup of the realized model, both from this run on this host: the
# table's quantile against 30 alternated end-to-end runs in 3 passes (spdy.gmp.measure_*),
# which drift apart by 10-20% on a shared CPU (docs/timing.md); 0.25 still fails a table that
# mispredicts by a quarter or more, e.g. a model whose sparse kernels were not used against a
# predicted 1.35x and more
SPEEDUP_TOLERANCE = 0.25


def _write_imagefolder(root: Path, size: int, per_class: int = 28) -> None:
    """Two classes a small net tells apart: bright left half vs bright right half."""
    rng = np.random.default_rng(0)
    for cls in (0, 1):
        folder = root / "train" / f"class{cls}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            cols = slice(0, size // 2) if cls == 0 else slice(size // 2, size)
            img[:, cols] += 150
            Image.fromarray(img).save(folder / f"{i}.png")


def _train_and_save(name: str, root: Path, size: int, path: Path) -> None:
    """A user's own training run: a few Adam steps on the images, the state dict saved."""
    data = load_dataset("imagefolder", root, size)
    torch.manual_seed(0)
    model = build(name, data.num_classes, data.in_shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    images = data.images(np.arange(len(data)))
    labels = torch.as_tensor(data.targets)
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        opt.step()
    if path.suffix == ".safetensors":
        save_file(model.state_dict(), str(path))
    else:
        torch.save(model.state_dict(), path)


def _tree(root: Path, size: int) -> dict:
    return {
        "data": {"root": str(root), "image_size": size, "val_fraction": 0.1},
        "spdy": {
            "dataset": "imagefolder",
            "models": [RESNET, USER],
            "weights": {RESNET: "resnet18.pt", USER: "branchy.safetensors"},
            "grid": {
                "min_sparsity": 0.5,
                "max_sparsity": 0.99,
                "steps": 1,  # levels 0.5 and 0.99: the pipeline, not the grid, is under test
                "skip_first_last": True,
            },
            "timing": {
                "batch_size": 32,
                "warmup": 2,
                "min_repeats": 1,
                "max_repeats": 3,
                "max_seconds": 0.01,
                "rounds": 1,
                "min_seconds": 0.0,
                "smooth_window": 1,
            },
            "recon": {"calib_samples": 8, "batch_size": 8, "solver": "sparsegpt"},
            "targets": [1.5],  # replaced from the run's own timing table
            "search": {"candidates": 1, "max_no_improvement": 1, "buckets": 100},
            # the table's choice kept (it asserts the table's promise below; a re-aim on a
            # loaded host's measurement would move it: tests/test_spdy_steps.py measures)
            "verify": {"rounds": 0},
            "gmp": {
                "profiles": ["spdy"],
                "seeds": [0],
                "end_epoch": 0.5,
                "finetune_epochs": 0.0,
                "every_steps": 1,
                "batch_size": 8,
                "measure_repeats": 30,  # the measured/predicted check needs a median
                "measure_passes": 3,
                "measure_block_seconds": 0.0,
            },
        },
        "export": {"check_samples": 8, "repeats": 2, "batch_size": 2},
    }


def _reachable_target(p: config.Params) -> float:
    """Halfway between 1x and the timing table's fastest uniform profile (every pruned layer at
    one level: the baseline SPDY is compared with, which must meet the target too), rounded
    down to 1/1000; the table must find a sparse level that beats dense."""
    path = layout.timing_table(p)
    layers = parquet_metadata(path)["layers"]
    table, meta = read_timing_table(path, p.model.name, layers)
    times = time_matrix(table, layers)
    totals = float(meta["dense_total_ms"]), float(meta["prunable_dense_ms"])
    reach = max(
        predicted_speedup(times, [level] * len(layers), *totals) for level in range(times.shape[1])
    )
    assert reach > 1.004, f"no sparse level of {layers} beats dense in the table: {reach:.4f}x"
    return float(np.floor(1000 * (1 + (reach - 1) / 2)) / 1000)


def _spdy_and_export(p: config.Params) -> None:
    for name in (
        "recondb_layer",
        "recondb",
        "spdy_search",
        "spdy_oneshot",
        "spdy_gmp",
        "spdy_results",
        "spdy_export",
    ):
        STEPS[name].run_all(p)


@pytest.mark.parametrize("model", [RESNET, USER])
def test_spdy_on_own_model_and_weights_then_onnx_export(workdir, monkeypatch, model):
    monkeypatch.syspath_prepend(str(REPO))
    root = workdir / "images"
    size = SIZES[model]
    _write_imagefolder(root, size)
    weights = "resnet18.pt" if model == RESNET else "branchy.safetensors"
    _train_and_save(model, root, size, workdir / weights)
    tree = _tree(root, size)
    # layers whose sparse kernels beat dense by a wide margin on a loaded host (globs):
    # resnet18's last stage (4 convs of 512x512x3x3 on 1x1 maps: dense streams 9.4 MB of
    # weights per conv; uniformly 99% sparse the model measured 1.52-1.64x), not its first
    # (64 channels on 8x8 maps: 1.00-1.30x between two runs a minute apart); the user
    # module's 512x512 linear, not its 8-channel convs (microseconds of work dense or sparse)
    tree["spdy"]["grid"]["include"] = ["layer4.*.conv*"] if model == RESNET else ["head.0"]
    p = config.scoped(config.from_dict(tree), f"spdy:{model}")
    for name in ("prepare", "train_dense", "profile"):  # none of them reads the targets
        STEPS[name].run_all(p)
    target = _reachable_target(p)
    tree["spdy"]["targets"], tree["export"]["target"] = [target], target
    p = config.scoped(config.from_dict(tree), f"spdy:{model}")
    assert STEPS["profile"].run(p)["status"] == "cached"
    _spdy_and_export(p)

    # the realized model meets the target on the run's own table, and measures as predicted
    (row,) = read_parquet(results_file(p), RESULTS_COLUMNS).to_dict("records")
    # SPDY's DP rounds each layer's time to the nearest of spdy.search.buckets buckets of the
    # budget (the authors' rounding): a chosen profile can overrun by half a bucket per layer
    slack = len(parquet_metadata(layout.timing_table(p))["layers"]) / 2
    slack /= tree["spdy"]["search"]["buckets"]
    assert row["target"] == target and row["predicted_speedup"] >= target / (1 + slack)
    ratio = row["measured_speedup"] / row["predicted_speedup"]
    assert abs(ratio - 1) <= SPEEDUP_TOLERANCE, row

    dense = STEPS["train_dense"].run(p)["summary"]
    assert dense["epochs"] == 0 and dense["weights"]["path"] == weights
    folder = spdy_export_dir(p)
    assert folder.parent == Path("artifacts/export/imagefolder") / layout.model_key(p)
    metrics = STEPS["spdy_export"].run(p)["summary"]
    # the step checked every output within export.atol + export.rtol * |torch| (it fails
    # otherwise): an absolute bound would depend on the logits' scale
    assert metrics["onnx_agrees_with_torch"] == 1.0 and metrics["ort_ms"] > 0

    # the exported weights load into the user's own module, pruned layers hold zeros
    mine = build(model, 2, (3, size, size)).eval()
    mine.load_state_dict(load_file(str(folder / "model.safetensors")))
    masks = load_file(str(folder / "masks.safetensors"))
    assert masks, "no pruned layer"
    modules = dict(mine.named_modules())
    for layer, mask in masks.items():
        assert torch.equal(modules[layer].weight != 0, mask.bool()), layer
    if model == RESNET:
        assert sorted(masks) == [f"layer4.{b}.conv{c}" for b in (0, 1) for c in (1, 2)]
    else:
        assert sorted(masks) == ["head.0"]
    # onnxruntime on the exported graph = the loaded torch module, at another batch size
    images = load_dataset("imagefolder", root, size).images(np.arange(5))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, mine(images).numpy(), atol=1e-4, rtol=1e-3)

    # `pruneflow export` and the notebook API read the same run from params.yaml
    (workdir / "params.yaml").write_text(yaml.safe_dump(tree))
    done = CliRunner().invoke(app, ["export", "-m", model, "--target", str(target)])
    assert done.exit_code == 0, done.output
    assert str(folder / "model.onnx") in done.stdout and "onnxruntime vs torch" in done.stdout
    run = api.Run()
    pruned = run.pruned_model("spdy", model=model, target=target)
    assert torch.equal(
        pruned.state_dict()[next(iter(masks)) + ".weight"], modules[next(iter(masks))].weight
    )
    assert set(run.profile("spdy", target=target, model=model)) == set(masks)
    assert run.exported("spdy", model=model) == folder
    assert set(run.oneshot(model)["profile"]) >= {"spdy", "uniform"}
