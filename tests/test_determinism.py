"""The same params give the same files whatever runs beside them: the CHEX comparison's items
and double descent's chains, run one by one and then on two threads in the other order, write
the same tensors and tables; and no module of pruneflow draws from a process-global generator
outside :mod:`pruneflow.seeding`."""

from __future__ import annotations

import ast
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from test_sdd_sweep import _params as sdd_params
from tiny_params import CHEX
from torch import nn

import pruneflow
from pruneflow import config, memory_format
from pruneflow.chex import paths
from pruneflow.chex.flops import module_flops
from pruneflow.config import Params
from pruneflow.models import build
from pruneflow.steps.chex import CHEX_COMPARE, compare_items
from pruneflow.steps.data import PREPARE
from pruneflow.steps.dense import TRAIN_DENSE
from pruneflow.steps.sdd import SDD_DENSE, SDD_SWEEP, chains, dense_items, run_chain

PACKAGE = Path(pruneflow.__file__).parent
WRAPPER = PACKAGE / "seeding.py"
# torch functions that draw from torch's global generator unless given generator=
TORCH_RANDOM = {
    "rand",
    "randn",
    "randint",
    "randperm",
    "rand_like",
    "randn_like",
    "randint_like",
    "normal",
    "bernoulli",
    "multinomial",
    "poisson",
}
TORCH_GLOBAL_STATE = {"manual_seed", "seed", "set_rng_state", "get_rng_state", "fork_rng"}
TENSOR_RANDOM = {"uniform_", "normal_", "random_", "bernoulli_", "exponential_", "cauchy_"}
NUMPY_ALLOWED = {"default_rng", "Generator", "SeedSequence", "PCG64", "BitGenerator"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def global_generator_uses(source: str) -> list[str]:
    """Where ``source`` reaches a process-global generator (torch's, numpy's, Python's)."""
    found = []
    tree = ast.parse(source)
    random_imported = any(
        (isinstance(n, ast.Import) and any(a.name == "random" for a in n.names))
        or (isinstance(n, ast.ImportFrom) and n.module == "random")
        for n in ast.walk(tree)
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "random":
            found.append(f"line {node.lineno}: from random import")
        if isinstance(node, ast.Attribute):
            name = _dotted(node)
            head, _, attr = name.rpartition(".")
            if head in ("np.random", "numpy.random") and attr not in NUMPY_ALLOWED:
                found.append(f"line {node.lineno}: {name}")
            if random_imported and head == "random" and attr != "Random":
                found.append(f"line {node.lineno}: {name}")
            if head in ("torch", "torch.random", "torch.cuda") and attr in TORCH_GLOBAL_STATE:
                found.append(f"line {node.lineno}: {name}")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = _dotted(node.func)
        has_generator = any(k.arg == "generator" for k in node.keywords)
        if name.startswith("torch.") and name.split(".")[-1] in TORCH_RANDOM and not has_generator:
            found.append(f"line {node.lineno}: {name} without generator=")
        if node.func.attr in TENSOR_RANDOM and not has_generator:
            found.append(f"line {node.lineno}: .{node.func.attr}() without generator=")
    return found


def test_the_scan_finds_global_generators():
    assert global_generator_uses("import torch\nx = torch.randperm(5)\n")
    assert not global_generator_uses("import torch\nx = torch.randperm(5, generator=g)\n")
    assert global_generator_uses("import torch\ntorch.manual_seed(0)\n")
    assert global_generator_uses("import numpy as np\nnp.random.shuffle(a)\n")
    assert not global_generator_uses("import numpy as np\nr = np.random.default_rng(0)\n")
    assert global_generator_uses("import random\nrandom.shuffle(a)\n")
    assert global_generator_uses("w.normal_(0, 1)\n")


def test_no_module_draws_from_a_global_generator_outside_the_wrapper():
    uses = {
        str(path.relative_to(PACKAGE)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != WRAPPER and (found := global_generator_uses(path.read_text()))
    }
    assert uses == {}


def _files(root: Path) -> dict[str, bytes]:
    """Every tensor file, table and JSON record under ``root``'s artifacts and metrics, byte for
    byte: no output carries a wall-clock figure (those go to the step record's ``timings``)."""
    return {
        str(f.relative_to(root)): f.read_bytes()
        for folder in ("artifacts", "metrics")
        for f in sorted((root / folder).rglob("*"))
        if f.suffix in (".safetensors", ".parquet", ".json")
    }


@pytest.fixture()
def two_folders(tmp_path, monkeypatch):
    """Run in folder one, then two: each with its own artifacts and step cache."""

    def enter(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        monkeypatch.setenv("PRUNEFLOW_STATE_DIR", str(folder / ".pruneflow"))
        return folder

    return enter


def test_chex_comparison_items_give_the_same_results_on_one_or_two_threads(two_folders):
    chex = {**CHEX, "compare": {**CHEX["compare"], "methods": ["chex", "static", "l1_norm"]}}
    params = config.updated(
        Params.model_validate({"runtime": {"threads": 1, "progress": "off"}}), chex=chex
    )
    results = []
    for name, workers in (("serial", 1), ("threads", 2)):
        two_folders(name)
        PREPARE.run(config.scoped(params, "chex"))
        q = config.scoped(params, "chex:resnet_mini")
        items = compare_items(q)
        if workers == 1:
            for item in items:
                CHEX_COMPARE.run(q, item=item)
        else:  # the other order, two at a time: the conv models train beside each other
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda item, q=q: CHEX_COMPARE.run(q, item=item), items[::-1]))
        results.append({json.dumps(i): paths.run_record(q, i).read_bytes() for i in items})
    assert len(results[0]) >= 3
    assert results[0] == results[1]


def test_sdd_chains_write_the_same_files_on_one_or_two_threads(two_folders):
    params = sdd_params(final_sparsity=0.8)  # levels 1-3 of a rewind and a re-init chain
    files = []
    for name, workers in (("serial", 1), ("threads", 2)):
        root = two_folders(name)
        p = config.scoped(params, "sdd:lenet300100")
        PREPARE.run(p)
        for item in dense_items(p):
            SDD_DENSE.run(p, item=item)
        todo = chains(p) if workers == 1 else chains(p)[::-1]
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda chain, p=p: run_chain(p, chain), todo))
        SDD_SWEEP.run(p)
        files.append(_files(root))
    assert any(f.endswith(".safetensors") for f in files[0])
    assert any(f.endswith("sweep.parquet") for f in files[0])
    assert sum(f.endswith(".json") for f in files[0]) >= 7  # dense + 6 level records, metrics
    assert files[0].keys() == files[1].keys()
    assert [f for f in files[0] if files[0][f] != files[1][f]] == []
    assert os.environ["PRUNEFLOW_STATE_DIR"].endswith("threads/.pruneflow")


def test_layer_flops_do_not_count_another_threads_forward_passes():
    model = build("resnet_mini", 10, (1, 8, 8))
    alone = module_flops(model, (1, 8, 8))
    other = build("resnet_mini", 10, (1, 8, 8))
    stop = threading.Event()

    def forward_passes() -> None:
        with torch.no_grad():
            while not stop.is_set():
                other(torch.zeros(4, 1, 8, 8))

    thread = threading.Thread(target=forward_passes)
    thread.start()
    try:
        beside = [module_flops(model, (1, 8, 8)) for _ in range(10)]
    finally:
        stop.set()
        thread.join()
    assert all(counts == alone for counts in beside)


def test_a_step_sees_one_onednn_setting_while_another_thread_trains_without_it():
    unsafe = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2))  # what oneDNN cannot train
    assert not memory_format.onednn_trains_safely(unsafe)
    default = torch.backends.mkldnn.enabled
    seen: list[bool] = []
    inside_training: list[bool] = []
    stop = threading.Event()

    def step_work() -> None:
        with memory_format.default_scope():
            for _ in range(200):
                seen.append(bool(torch.backends.mkldnn.enabled))
                time.sleep(0.001)

    def unsafe_training() -> None:
        while not stop.is_set():
            with memory_format.training_backend(unsafe) as onednn:
                inside_training.append(onednn or bool(torch.backends.mkldnn.enabled))
                time.sleep(0.002)

    trainer = threading.Thread(target=unsafe_training)
    trainer.start()
    time.sleep(0.01)
    worker = threading.Thread(target=step_work)
    worker.start()
    worker.join()
    stop.set()
    trainer.join()
    assert seen and set(seen) == {default}
    assert inside_training and not any(inside_training)
    assert torch.backends.mkldnn.enabled == default


def test_dense_training_in_two_folders_writes_byte_identical_files_and_times_the_record(
    two_folders,
):
    params = Params.model_validate(
        {"runtime": {"threads": 1, "progress": "off"}, "train": {"epochs": 1}}
    )
    files, records = [], []
    for name in ("one", "two"):
        root = two_folders(name)
        PREPARE.run(params)
        records.append(TRAIN_DENSE.run(params))
        files.append(_files(root))
    assert any(f.endswith(".safetensors") for f in files[0])
    assert any(f.startswith("metrics/train_dense/") for f in files[0])
    assert files[0].keys() == files[1].keys()
    assert [f for f in files[0] if files[0][f] != files[1][f]] == []
    # how long training took is in the step record (and the run log), never in an output
    for record in records:
        assert record["status"] == "computed"
        assert 0 < record["timings"]["train"] <= record["timings"]["step"]
        assert "train_seconds" not in record["summary"]
    entry = f"stepcache/train_dense-{records[1]['fingerprint']}/record.json"
    stored = json.loads((Path(os.environ["PRUNEFLOW_STATE_DIR"]) / entry).read_text())
    assert stored["timings"] == records[1]["timings"]
