"""CHEX and DVC: the chex stages declare exactly what the steps write, for every params value,
and their input artifacts come from other stages."""

import itertools
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pruneflow import config, layout
from pruneflow.chex import paths
from pruneflow.chex.report import ABLATION_COLUMNS
from pruneflow.config import Params
from pruneflow.steps import STEPS
from pruneflow.steps.chex import CHEX_COMPARE, CHEX_REPORT, compare_items
from pruneflow.steps.data import PREPARE

REPO = Path(__file__).resolve().parent.parent
CHEX_STAGES = ("chex_train", "chex_extract", "chex_compare", "chex_report")


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _resolver(params: Params, item: str | None = None, variables: dict | None = None):
    known = {"item": item, **(variables or {})}

    def resolve(text: str) -> str:
        return re.sub(
            r"\$\{([^}]+)\}",
            lambda m: str(known[m.group(1)] if m.group(1) in known else params.get(m.group(1))),
            text,
        )

    return resolve


def _expanded(params: Params) -> list[tuple[dict, dict]]:
    """(stage body, template variables) of every stage, foreach and matrix stages expanded."""
    out = []
    for stage in _stages().values():
        if "foreach" in stage:
            out += [(stage["do"], {"item": i}) for i in params.get(stage["foreach"].strip("${}"))]
        elif "matrix" in stage:
            axes = {k: params.get(v.strip("${}")) for k, v in stage["matrix"].items()}
            for combo in itertools.product(*axes.values()):
                out.append((stage, {f"item.{k}": v for k, v in zip(axes, combo, strict=True)}))
        else:
            out.append((stage, {}))
    return out


def _files(body: dict, kinds: tuple[str, ...], resolve) -> set[str]:
    return {
        resolve(e if isinstance(e, str) else next(iter(e)))
        for kind in kinds
        for e in body.get(kind, [])
    }


VARIANTS = [
    {},
    {"compare": {"ablations": ["no_regrow", "arch_scratch"], "ablation_targets": [0.9]}},
    {"compare": {"targets": [0.5], "seeds": [4], "dense_reference": False, "ablations": []}},
    {"flops_reduction": None, "sparsity": 0.5},
]


@pytest.mark.parametrize("chex", VARIANTS)
def test_declared_outputs_are_the_steps_outputs_for_every_params_value(chex):
    params = config.updated(Params(), chex=chex)
    for model in params.chex.models:
        view = config.scoped(params, f"chex:{model}")
        resolve = _resolver(params, model)
        for name in CHEX_STAGES:
            body = _stages()[name]["do"]
            written = _files(body, ("outs", "metrics", "plots"), resolve)
            step = STEPS[resolve(body["cmd"]).split()[2]]
            if step.fan_out:
                for item in step.items(view):
                    for path in map(str, step.output_paths(view, item)):
                        assert any(path.startswith(out + "/") for out in written), (name, path)
            else:
                assert written == {str(p) for p in step.output_paths(view)}, (name, chex)


def test_every_artifact_a_chex_stage_reads_is_some_stage_output():
    params = Params()
    outs: set[str] = set()
    for body, variables in _expanded(params):
        outs |= _files(body, ("outs", "metrics", "plots"), _resolver(params, variables=variables))
    for name in CHEX_STAGES:
        for model in params.chex.models:
            deps = _files(_stages()[name]["do"], ("deps",), _resolver(params, model))
            for dep in (d for d in deps if d.startswith("artifacts/")):
                assert any(dep == o or dep.startswith(o + "/") for o in outs), (name, dep)


def test_report_without_ablations_still_writes_every_declared_file(workdir):
    chex = {
        "dataset": "digits",
        "train": {"epochs": 1, "batch_size": 256, "lr": 0.1},
        "delta_t": 0.5,
        "t_max": 1.0,
        "compare": {"targets": [0.7], "seeds": [0], "methods": ["static"], "ablations": []},
    }
    p = config.updated(
        Params.model_validate({"runtime": {"threads": 1, "progress": "off"}}), chex=chex
    )
    PREPARE.run(config.scoped(p, "chex"))
    view = config.scoped(p, "chex:resnet_mini")
    for item in compare_items(view):
        CHEX_COMPARE.run(view, item=item)
    CHEX_REPORT.run(view)
    body = _stages()["chex_report"]["do"]
    written = _files(body, ("outs", "metrics", "plots"), _resolver(p, "resnet_mini"))
    assert written == {str(path) for path in CHEX_REPORT.output_paths(view)}
    assert all(Path(path).is_file() for path in written)
    ablation = pd.read_parquet(paths.ablation_table(view))
    assert ablation.empty and list(ablation.columns) == list(ABLATION_COLUMNS)
    assert paths.report_figure(view, "ablation").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads(layout.metrics_file(view, "chex_report").read_text())
    static = metrics["flops-70%"]["static"]
    assert static["seeds"] == 1 and static["flops_reduction"] >= 0.7
    frame = pd.read_parquet(paths.comparison_table(view))
    assert static["test_acc_mean"] == pytest.approx(frame["test_acc"].item(), abs=1e-5)
    assert metrics["dense_test_acc_mean"] > 0
