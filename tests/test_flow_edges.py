"""The flows' edges come from the steps' declared files; one table of tasks and one of flows."""

import typing

from prefect import Flow

from flows.deployed import deployed
from pruneflow import config, layout
from pruneflow.checkpoint import sidecar
from pruneflow.config import Params
from pruneflow.deploy import FLOWS, load_flow
from pruneflow.steps import STEPS
from pruneflow.steps.recondb import layer_items, layer_path
from tasks.common import feeding
from tasks.steps import TASKS


def _record(*paths) -> dict:
    return {"outputs": [{"path": str(p)} for p in paths]}


def test_a_task_waits_for_exactly_the_records_whose_files_it_reads():
    params = Params().model_dump(mode="json")
    scope = "spdy:mlp1024"
    view = config.scoped(Params(), scope)
    labels = _record(layout.labels_table(view))
    dense = _record(layout.dense_checkpoint(view), sidecar(layout.dense_checkpoint(view)))
    timing = _record(layout.timing_table(view))
    done = [labels, dense, timing]
    assert feeding(TASKS["train_dense"], params, scope, None, done) == [labels]
    assert feeding(TASKS["profile"], params, scope, None, done) == [labels]
    item = layer_items(view)[0]
    assert feeding(TASKS["recondb_layer"], params, scope, item, done) == [labels, dense]
    # the index reads every layer file: each layer's record is an edge, the timing table not
    layers = [_record(layer_path(view, i["layer"])) for i in layer_items(view)]
    assert feeding(TASKS["recondb"], params, scope, None, [*done, *layers]) == [labels, *layers]


def test_an_output_folder_feeds_the_files_under_it():
    params = Params().model_dump(mode="json")
    view = config.scoped(Params(), "spdy:mlp1024")
    folder = _record(layout.recondb_dir(view) / "layers")
    assert feeding(TASKS["recondb"], params, "spdy:mlp1024", None, [folder]) == [folder]


def test_every_step_has_its_task_and_every_flow_name_one_flow():
    assert set(TASKS) == set(STEPS)
    assert all(TASKS[name].name == name for name in STEPS)
    for name in FLOWS:
        assert isinstance(load_flow(name), Flow), name
    # a deployment's `target` takes the same names
    target = typing.get_type_hints(deployed.fn)["target"]
    assert set(typing.get_args(target)) == set(FLOWS)
