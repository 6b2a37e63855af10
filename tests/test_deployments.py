"""pipelines.yaml for real, as a team runs it: a Prefect server on loopback keeping its state in
PostgreSQL (a throwaway cluster, ``conftest.database_url``), pools, `prefect deploy`, a process
worker, `prefect deployment run --watch` of the smoke deployment until Completed with its
artifacts written and its flow run in PostgreSQL; a run on a host without its data root, and a
deployment to a pool that does not exist, each fail with one line. Plus the file itself: every
entrypoint imports, every pool is one the README tells users to create, every deployment's
params validate. (The SQLite server every other flow test runs on is ``conftest.prefect_api``.)"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import socket
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule
from prefect_stack import REPO, assert_smoke_completed, deploy_smoke, make_checkout, prefect_stack

from pruneflow import config
from pruneflow.deploy import read_pipelines, select
from pruneflow.errors import PruneflowError
from pruneflow.worker import checkout, enter_checkout, worker_params

PIPELINES = REPO / "pipelines.yaml"


def _readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Beyond one laptop")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _load_entrypoint(entrypoint: str) -> Flow:
    path, _, name = entrypoint.partition(":")
    spec = importlib.util.spec_from_file_location(f"entry_{Path(path).stem}", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def test_pipelines_yaml_entrypoints_pools_schedules_and_params():
    tree = yaml.safe_load(PIPELINES.read_text())
    deployments = read_pipelines(PIPELINES)
    names = [d.name for d in deployments]
    assert {"smoke", "all", "spdy", "sdd", "chex"} <= set(names) and len(set(names)) == len(names)
    targets = {d.parameters["target"] for d in deployments}
    assert {"all", "spdy", "sdd", "chex", "profile"} <= targets

    # every pool is created in the README's instructions, and the three kinds are there
    pattern = r"prefect work-pool create ([\w-]+) --type process"
    created = set(re.findall(pattern, _readme_section()))
    pools = {d.pool for d in deployments}
    assert pools <= created, f"pools not created in the README: {pools - created}"
    assert {"cpu", "gpu"} <= pools and any(p.startswith("profile-") for p in pools)
    timing = [d for d in deployments if d.parameters["target"] in ("profile", "spdy")]
    assert timing and all(d.pool.startswith("profile-") for d in timing)

    for d in deployments:
        flow = _load_entrypoint(d.entrypoint)
        assert isinstance(flow, Flow), d.entrypoint
        assert set(d.parameters) <= set(flow.parameters.properties), d.name
        assert d.tags and "pruneflow" in d.tags
        # the parameters are what the worker will load: they must validate
        config.load(REPO / d.parameters["params_file"], d.parameters["overrides"])
        for schedule in d.schedules:
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))

    # the nightly smoke run is the smoke preset, one source for its tiny settings
    (smoke,) = [d for d in deployments if d.name == "smoke"]
    assert smoke.parameters["params_file"] == "presets/smoke.yaml"
    preset = config.load(REPO / "presets/smoke.yaml").model_dump(mode="json")
    deployed = config.load(REPO / "presets/smoke.yaml", smoke.parameters["overrides"])
    assert {**deployed.model_dump(mode="json"), "runtime": preset["runtime"]} == preset

    crons = {d.name: [s["cron"] for s in d.schedules] for d in deployments}
    assert crons["smoke"] and crons["smoke"][0].split()[2:] == ["*", "*", "*"]  # nightly
    weekly = [n for n, c in crons.items() if c and c[0].split()[4] != "*"]
    assert "sdd" in weekly

    # the pull step resolves on the worker: an importable function, no path of this machine
    (step,) = tree["pull"]
    (fqn,) = step
    module, _, fn = fqn.rpartition(".")
    assert getattr(importlib.import_module(module), fn) is enter_checkout
    assert str(REPO) not in PIPELINES.read_text()
    with pytest.raises(PruneflowError, match="no deployment named nope"):
        select(deployments, ["nope"])


def test_worker_side_checkout_and_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("PRUNEFLOW_CHECKOUT", raising=False)
    assert checkout() == REPO  # the installed (editable) pruneflow's checkout
    monkeypatch.setenv("PRUNEFLOW_CHECKOUT", str(tmp_path))
    with pytest.raises(PruneflowError) as err:
        checkout()
    assert socket.gethostname() in str(err.value) and "\n" not in str(err.value)
    params = worker_params(str(REPO / "params.yaml"), ["data.root=/nonexistent"], "dense")
    assert params["data"]["root"] == "/nonexistent"  # digits is embedded: no root needed
    with pytest.raises(PruneflowError, match=r"data.root /nonexistent does not exist .*mnist"):
        worker_params(
            str(REPO / "params.yaml"), ["data.root=/nonexistent", "data.dataset=mnist"], "all"
        )


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, database_url):
    """A server on PostgreSQL, pools cpu, gpu and profile-cpu-x86, every deployment, a worker on
    pool cpu with its own checkout; all stopped at the end."""
    root = tmp_path_factory.mktemp("deployments")
    work = make_checkout(root / "checkout")
    with pytest.MonkeyPatch.context() as mp:
        with prefect_stack(root, mp, database_url=database_url) as stack:
            # the README's `prefect deploy --prefect-file pipelines.yaml --all`, every pool there
            deploy_smoke(stack, work, pools=("cpu", "gpu", "profile-cpu-x86"))
            yield stack, work


async def _count_flow_runs(url: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return await connection.fetchval("SELECT count(*) FROM flow_run")
    finally:
        await connection.close()


def test_smoke_deployment_completes_on_a_process_worker(deployed, database_url):
    stack, work = deployed
    run = assert_smoke_completed(stack, work)
    assert run["parameters"]["target"] == "all"
    deployment = stack.api(f"deployments/{run['deployment_id']}")
    assert deployment["work_pool_name"] == "cpu" and "smoke" in deployment["tags"]
    assert deployment["pull_steps"] == [{"pruneflow.worker.enter_checkout": {"directory": None}}]
    # the server kept its state in PostgreSQL, not in a SQLite file of its home
    assert asyncio.run(_count_flow_runs(database_url)) >= 1
    assert not list((stack.root / "prefect").glob("*.db"))


def test_a_run_on_a_host_without_its_data_root_fails_in_one_line(deployed):
    stack, _ = deployed
    overrides = ["data.dataset=mnist", "data.root=/no/such/data"]
    run = stack.run_deployment("smoke", {"overrides": overrides}, timeout=120)
    assert run["state"]["type"] == "FAILED", run["cli_output"]
    assert run["cli_returncode"] != 0
    message = run["state"]["message"]
    assert "data.root /no/such/data does not exist (needed for data set mnist)" in message
    assert "\n" not in message.strip()


def test_every_deployment_deployed_to_its_pool(deployed):
    stack, _ = deployed
    on_server = {
        d["name"]: (d["work_pool_name"], d["entrypoint"], sorted(d["tags"]))
        for d in stack.post("deployments/filter", {"limit": 50})
    }
    expected = {d.name: (d.pool, d.entrypoint, sorted(d.tags)) for d in read_pipelines(PIPELINES)}
    assert on_server == expected


def test_deploying_to_a_missing_pool_is_one_line(deployed, tmp_path):
    stack, _ = deployed
    stack.checked("work-pool", "delete", "gpu")
    result = run_cli(
        "deploy", "sdd", "chex", "--prefect-file", str(REPO / "pipelines.yaml"),
        cwd=tmp_path, env={"PREFECT_API_URL": stack.url}, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "work pool gpu (used by deployment sdd, chex) does not exist" in lines[0]
    assert "prefect work-pool create gpu --type process" in lines[0]
