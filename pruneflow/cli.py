"""The ``pruneflow`` command.

  pruneflow run [FLOW]             run a flow (Prefect: cached, restartable) and print a summary
  pruneflow stage NAME             run one pipeline step without Prefect (what DVC stages call)
  pruneflow steps                  list the steps, the params keys they read and their outputs
  pruneflow layers                 a model's prunable layers, their shapes, which are pruned
  pruneflow export                 a pruned model as safetensors + ONNX, checked in onnxruntime
  pruneflow report                 rebuild the report (Markdown + HTML) from the Parquet tables
  pruneflow dvc-yaml [--check]     write dvc.yaml from the steps (--check: fail when stale)
  pruneflow deploy [NAME...]       deploy pipelines.yaml's deployments (pools checked first)
  pruneflow server start|stop|status   the reusable local Prefect server

Every command takes ``--params FILE`` (default params.yaml) and repeatable
``--set dotted.key=value`` overrides. A user-facing error is printed as one line and the
command exits with status 2.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pruneflow.deploy import FLOWS as DEPLOYABLE_FLOWS
from pruneflow.errors import PruneflowError

if TYPE_CHECKING:
    from pruneflow import config

# Heavy modules (config -> torch, the steps, Prefect) are imported where a command needs them:
# `pruneflow run` with nothing to do needs none of them (pruneflow.run_shortcut).

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
server_app = typer.Typer(no_args_is_help=True, help="The reusable local Prefect server.")
app.add_typer(server_app, name="server")

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override: dotted.key=value (repeatable)")
]
ScopeOpt = Annotated[
    str | None,
    typer.Option("--scope", help="one method's model, e.g. spdy:smallcnn (its data/model/train)"),
]
FLOWS = tuple(DEPLOYABLE_FLOWS)


def _code_root() -> Path:
    """The folder holding flows/ and tasks/: the nearest one up from here, else the checkout.

    Artifacts and pipeline state are always relative to the current folder; only the flows'
    code is looked up here.
    """
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "flows").is_dir() and (folder / "tasks").is_dir():
            return folder
    return Path(__file__).resolve().parent.parent


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PruneflowError as exc:
            Console(stderr=True).print(
                f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None

    return wrapper


def _load(params_file: Path, overrides: list[str] | None) -> config.Params:
    """Validate params, and make the repository's flows/ and tasks/ importable."""
    from pruneflow import config

    root = _code_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return config.load(params_file, overrides or [])


def _connect(params: config.Params) -> None:
    from pruneflow.prefect_env import configure_environment, ensure_local_server, require_server
    from pruneflow.statedir import state_dir
    from pruneflow.steps.base import say

    configure_environment(state_dir())
    mode = params.orchestration.server
    if os.environ.get("PREFECT_API_URL"):
        require_server(os.environ["PREFECT_API_URL"])
        return
    if mode == "ephemeral":
        return
    if mode == "local":
        started = time.perf_counter()
        url, fresh = ensure_local_server(state_dir())
        if fresh:
            say(
                f"  started Prefect server {url} in {time.perf_counter() - started:.1f} s "
                "(reused by later runs; `pruneflow server stop` stops it)"
            )
        os.environ["PREFECT_API_URL"] = url
    else:
        require_server(mode)
        os.environ["PREFECT_API_URL"] = mode


def _summary(
    flow: str, records: list[dict[str, Any]], wall: float, results_text: str | None = None
) -> str:
    """Print the steps table and the results' tables; record the run log. Returns the results'
    tables as text (ANSI styles kept) for :mod:`pruneflow.run_shortcut`, which passes them back
    as ``results_text`` when it replays a run."""
    from rich.text import Text

    from pruneflow.run_summary import print_steps, write_run_log

    console = Console(record=True)
    print_steps(console, records, wall)
    write_run_log(flow, records, wall)
    console.export_text(clear=True)  # the steps table is made afresh on a replay
    if results_text is not None:
        console.print(Text.from_ansi(results_text), end="")
        return results_text
    _results(console, flow, records)
    return console.export_text(styles=True)


def _results(console: Console, flow: str, records: list[dict[str, Any]]) -> None:
    """The results' tables of a run: the dense model's, SPDY's, the claims."""
    # the foundation's dense model (`pruneflow run dense`); the methods' tables follow
    dense = next((r for r in records if r["step"] == "train_dense"), None)
    data = next((r for r in records if r["step"] == "prepare"), None)
    if flow == "dense" and dense and data:
        m, d = dense["summary"], data["summary"]
        res = Table(
            title="dense model: accuracy on noisy train labels, true train labels, val, clean test"
        )
        for col in ("data", "model", "noise", "fit noisy", "train true", "val", "test (clean)"):
            res.add_column(col, justify="right")
        res.add_row(
            d["dataset"],
            dense["params"]["model.name"],
            f"{d['noise_rate_realised']:.0%}",
            f"{m['train_noisy_acc']:.2%}",
            f"{m['train_true_acc']:.2%}",
            f"{m['val_acc']:.2%}",
            f"{m['test_acc']:.2%}",
        )
        console.print(res)
    for r in records:
        if r["step"] == "spdy_oneshot":
            _oneshot_table(console, r["params"]["model.name"], r["summary"]["table"])
        if r["step"] == "spdy_results":
            summary = r["summary"]
            _results_table(
                console, r["params"]["model.name"], summary["table"], summary.get("test_size")
            )
    report = next((r for r in records if r["step"] == "report"), None)
    if report is not None:
        made = report["summary"]
        _claims_table(console, made.get("claims", []), made.get("claims_note"))
        console.print(f"report: {made['html']} (and {made['markdown']})")


def _claims_table(console: Console, claims: list[dict[str, str]], note: str | None = None) -> None:
    """The report's Claims section: each paper's claim, what this run measured, the verdict."""
    table = Table(title="Claims: each paper's claim against this run (95% intervals)")
    for col in ("paper", "claim", "this run measured", "verdict"):
        table.add_column(col, overflow="fold")
    style = {"reproduced": "green", "not reproduced": "red", "inconclusive": "yellow"}
    for c in claims:
        v = c["verdict"]
        table.add_row(c["paper"], c["claim"], c["measured"], f"[{style.get(v, '')}]{v}")
    if note:
        table.add_row("", note, "", "")
    elif not claims:
        table.add_row("", "no method has produced the results a claim is read from", "", "")
    console.print(table)


def _oneshot_table(console: Console, model: str, rows: list[dict[str, Any]]) -> None:
    """SPDY one-shot: per target, calibration loss / test accuracy / speedup of each profile."""
    profiles = list(dict.fromkeys(r["profile"] for r in rows))
    table = Table(title=f"SPDY one-shot on {model}: calibration loss / test accuracy (speedup)")
    table.add_column("target", justify="right")
    for name in profiles:
        table.add_column(name, justify="right")
    for target in dict.fromkeys(r["target"] for r in rows):
        cells = {r["profile"]: r for r in rows if r["target"] == target}
        best = min(cells.values(), key=lambda r: r["calib_loss"])["profile"]
        table.add_row(
            f"{target:g}x",
            *(
                ("[bold]" if name == best else "")
                + f"{cells[name]['calib_loss']:.4f} / {cells[name]['test_acc']:.2%} "
                f"({cells[name]['predicted_speedup']:.2f}x)"
                for name in profiles
            ),
        )
    console.print(table)


def _results_table(
    console: Console, model: str, rows: list[dict[str, Any]], test_size: int | None = None
) -> None:
    """SPDY after gradual pruning, in the paper's Table 4 layout, measured speedups beside."""
    import pandas as pd

    from pruneflow.steps.spdy_gmp import results_table

    head, rows_ = results_table(pd.DataFrame(rows), test_size)
    table = Table(title=f"SPDY gradual pruning on {model}: test accuracy, paired by seed")
    for col in head:
        table.add_column(col, justify="right")
    for cells in rows_:
        table.add_row(*cells)
    console.print(table)


@app.command()
@_user_errors
def run(
    target: Annotated[str, typer.Argument(help=f"which flow: {', '.join(FLOWS)}")] = "all",
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Run the pipeline as a Prefect flow (cached, restartable) and print a summary."""
    if target not in FLOWS:
        raise PruneflowError(f"unknown flow '{target}'; choose one of: {', '.join(FLOWS)}")
    started = time.perf_counter()
    from pruneflow import run_shortcut

    facts = run_shortcut.facts(target, params_file, overrides or [], _code_root())
    replayed = run_shortcut.replay(facts)
    if replayed is not None:  # nothing changed since the last complete run: its answer holds
        records, results_text = replayed
        print(
            f"  = all {len(records)} step runs up to date: nothing changed since the last "
            "complete run (inputs, outputs, code, params, host)",
            file=sys.stderr,
            flush=True,
        )
        _summary(target, records, time.perf_counter() - started, results_text)
        return
    params = _load(params_file, overrides)
    from pruneflow.models.preflight import check_own_inputs

    check_own_inputs(params, target)  # the user's models, weights and data, before any work
    _connect(params)
    from pruneflow.data.manifest import FOLDERS
    from pruneflow.deploy import load_flow
    from pruneflow.prefect_env import server_watchdog
    from tasks.runner import with_runner

    chosen = load_flow(target)

    with server_watchdog(os.environ.get("PREFECT_API_URL"), params.orchestration.server_grace):
        records = with_runner(chosen, params)(params.model_dump(mode="json"))
    results_text = _summary(target, records, time.perf_counter() - started)
    run_shortcut.remember(facts, records, results_text, FOLDERS)


@app.command()
@_user_errors
def deploy(
    names: Annotated[
        list[str] | None, typer.Argument(help="deployments to deploy (default: all)")
    ] = None,
    prefect_file: Annotated[
        Path, typer.Option("--prefect-file", help="the Prefect project file")
    ] = Path("pipelines.yaml"),
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Deploy pipelines.yaml's deployments to the Prefect server, after checking their pools."""
    from pruneflow.deploy import FLOW_NAME
    from pruneflow.deploy import deploy as deploy_to

    _connect(_load(params_file, overrides))
    url = os.environ["PREFECT_API_URL"]
    for d in deploy_to(prefect_file, names or [], url, _code_root()):
        typer.echo(f"deployed {FLOW_NAME}/{d.name} on pool {d.pool} ({url})")


@app.command()
@_user_errors
def stage(
    name: Annotated[str, typer.Argument(help="step name (see `pruneflow steps`)")],
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    scope: ScopeOpt = None,
    force: Annotated[bool, typer.Option(help="recompute even when up to date")] = False,
    item: Annotated[
        list[str] | None,
        typer.Option("--item", help="a fan-out step's one item, key=value (repeatable)"),
    ] = None,
) -> None:
    """Run one step directly, without Prefect (what each DVC stage calls).

    A fan-out step runs all its items in order, or with ``--item`` just that one
    (``--item target=2.0``).
    """
    from pruneflow.steps import STEPS

    if name not in STEPS:
        raise PruneflowError(f"unknown step '{name}'; choose one of: {', '.join(STEPS)}")
    from pruneflow import config

    params = config.scoped(_load(params_file, overrides), scope)
    if item:
        STEPS[name].run(params, force=force, item=dict(map(config.parse_override, item)))
    else:
        STEPS[name].run_all(params, force=force)


@app.command("dvc-yaml")
@_user_errors
def dvc_yaml(
    path: Annotated[Path, typer.Option("--out", help="where dvc.yaml lives")] = Path("dvc.yaml"),
    check: Annotated[
        bool, typer.Option("--check", help="write nothing; exit 1 when the file is stale")
    ] = False,
) -> None:
    """Write dvc.yaml from the steps' declared params, inputs, outputs and code."""
    from pruneflow import dvcgen

    if check:
        if not dvcgen.is_current(path):
            typer.echo(f"{path} is stale: run `pruneflow dvc-yaml` and commit it", err=True)
            raise typer.Exit(1)
        return
    typer.echo(f"{path}: {'written' if dvcgen.write(path) else 'up to date'}")


@app.command()
@_user_errors
def profile(
    models: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="default: every spdy.models entry")
    ] = None,
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    force: Annotated[bool, typer.Option(help="measure again even when up to date")] = False,
) -> None:
    """Measure the SPDY models' layer-time tables on this host (no Prefect server needed)."""
    from pruneflow import config
    from pruneflow.steps import STEPS

    params = _load(params_file, overrides)
    for model in models or params.spdy.models:
        scoped = config.scoped(params, f"spdy:{model}")
        STEPS["prepare"].run(scoped)
        record = STEPS["profile"].run(scoped, force=force)
        summary = record["summary"]
        table = Table(title=f"{model}: dense layer times (batch {summary['batch_size']})")
        table.add_column("layer")
        table.add_column("ms", justify="right")
        for layer, ms in summary["dense_layer_ms"].items():
            table.add_row(layer, f"{ms:.3f}")
        table.add_row("remainder", f"{summary['remainder_ms']:.3f}")
        table.add_row("whole model", f"{summary['dense_total_ms']:.3f}")
        Console().print(table)


@app.command()
@_user_errors
def steps(params_file: ParamsOpt = Path("params.yaml"), overrides: SetOpt = None) -> None:
    """List the pipeline steps, the params keys each reads and the files each writes."""
    from pruneflow.steps import STEPS

    params = _load(params_file, overrides)
    table = Table()
    for col in ("step", "reads", "writes"):
        table.add_column(col)
    for step in STEPS.values():
        writes = (
            "(one set per item)" if step.fan_out else "\n".join(map(str, step.output_paths(params)))
        )
        table.add_row(step.name, "\n".join(step.reads), writes)
    Console().print(table)


@app.command()
@_user_errors
def layers(
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="default: the method's first model (any name)"),
    ] = None,
    method: Annotated[str, typer.Option("--method", help="whose rule: spdy, sdd or chex")] = "spdy",
) -> None:
    """List a model's prunable layers (Conv2d, Linear), their weight shapes and which a method
    prunes: SPDY (spdy.grid: skip_first_last, include, exclude), SDD (every layer, sdd.include,
    sdd.exclude) or CHEX (the convs of the channel groups chex.include/exclude select). Builds
    the model; trains nothing."""
    import torch

    from pruneflow import config
    from pruneflow.data import load_dataset
    from pruneflow.models import build
    from pruneflow.models.layers import layer_table, marked_layers

    if method not in config.SCOPED_METHODS:
        raise PruneflowError(f"--method must be one of {', '.join(config.SCOPED_METHODS)}")
    params = _load(params_file, overrides)
    section = getattr(params, method)
    if model is not None:
        config.from_dict({"model": {"name": model}}, source="--model")  # params.yaml's check
        if model not in section.models:
            section = section.model_copy(update={"models": [*section.models, model]})
            params = params.model_copy(update={method: section})
    scoped = config.scoped(params, f"{method}:{model or section.models[0]}")
    data = load_dataset(scoped.data.dataset, scoped.data.root, scoped.data.image_size)
    net = build(scoped.model.name, data.num_classes, data.in_shape)
    name = scoped.model.name
    if method == "spdy":
        g = scoped.spdy.grid
        rows = layer_table(net, name, g.skip_first_last, g.include, g.exclude)
    elif method == "sdd":
        rows = layer_table(net, name, False, scoped.sdd.include, scoped.sdd.exclude)
    else:
        from pruneflow.chex.groups import find_groups

        example = torch.zeros(2, *data.in_shape)
        c = scoped.chex
        groups = find_groups(net, example, c.include, c.exclude, name)
        rows = marked_layers(net, {conv for g in groups for conv in g.producers})
    table = Table(title=f"{scoped.model.name} on {scoped.data.dataset} {data.in_shape}")
    for col in ("layer", "type", "weight shape", "weights", "pruned"):
        table.add_column(col, justify="right" if col == "weights" else "left")
    for r in rows:
        shape = "x".join(map(str, r.shape))
        table.add_row(r.name, r.kind, shape, f"{r.weights:,}", "yes" if r.pruned else "no")
    Console().print(table)
    pruned = sum(r.pruned for r in rows)
    typer.echo(f"{pruned} of {len(rows)} prunable layers pruned")


@app.command()
@_user_errors
def export(
    method: Annotated[str, typer.Option("--method", help="spdy or chex")] = "spdy",
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="default: the method's first model")
    ] = None,
    profile: Annotated[str | None, typer.Option(help="export.profile (SPDY)")] = None,
    target: Annotated[float | None, typer.Option(help="export.target (SPDY)")] = None,
    seed: Annotated[int | None, typer.Option(help="export.seed (SPDY)")] = None,
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    force: Annotated[bool, typer.Option(help="export again even when up to date")] = False,
) -> None:
    """Export a pruned model (the step spdy_export or chex_export, what the DVC stages run):
    safetensors + ONNX, checked and timed in onnxruntime; prints where it wrote them."""
    from pruneflow import config
    from pruneflow.steps import STEPS

    if method not in ("spdy", "chex"):
        raise PruneflowError(f"export: --method must be spdy or chex, got '{method}'")
    chosen = {"profile": profile, "target": target, "seed": seed}
    sets = [f"export.{k}={v}" for k, v in chosen.items() if v is not None]
    params = _load(params_file, [*(overrides or []), *sets])
    scoped = config.scoped(params, f"{method}:{model or getattr(params, method).models[0]}")
    step = STEPS[f"{method}_export"]
    record = step.run(scoped, force=force)
    for path in step.output_paths(scoped):
        typer.echo(str(path))
    s = record["summary"]
    typer.echo(
        f"onnxruntime vs torch: max |diff| {s['max_abs_diff_onnx_vs_torch']:.2e}; "
        f"onnxruntime {s['ort_ms']:.3f} ms (dense {s['ort_ms_dense']:.3f} ms, "
        f"{s['ort_speedup']:.2f}x)"
    )


@app.command()
@_user_errors
def report(
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="folder (default: artifacts/reports)")
    ] = None,
) -> None:
    """Rebuild the report from the pipeline's Parquet tables alone and print its paths."""
    from pruneflow.report import build_report

    params = _load(params_file, overrides)
    paths = build_report(params, out, params_file=params_file, overrides=overrides or [])
    typer.echo(paths.markdown)
    typer.echo(paths.html)


@server_app.command("start")
@_user_errors
def server_start() -> None:
    """Start (or find) the local Prefect server and print its API URL."""
    from pruneflow.prefect_env import ensure_local_server
    from pruneflow.statedir import state_dir

    url, fresh = ensure_local_server(state_dir())
    typer.echo(f"{'started' if fresh else 'running'}: {url}")


@server_app.command("stop")
@_user_errors
def server_stop() -> None:
    """Stop the local Prefect server started by pruneflow."""
    from pruneflow.prefect_env import stop_local_server
    from pruneflow.statedir import state_dir

    typer.echo("stopped" if stop_local_server(state_dir()) else "no server was running")


@server_app.command("status")
@_user_errors
def server_status() -> None:
    """Print the local Prefect server's URL, or say that none is running."""
    from pruneflow.prefect_env import server_status as status
    from pruneflow.statedir import state_dir

    url = status(state_dir())
    typer.echo(url or "no server running")
