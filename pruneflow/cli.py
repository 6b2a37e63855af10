"""The ``pruneflow`` command.

  pruneflow run [all|dense]        run a flow (Prefect: cached, restartable) and print a summary
  pruneflow stage NAME             run one pipeline step without Prefect (what DVC stages call)
  pruneflow steps                  list the steps, the params keys they read and their outputs
  pruneflow report                 rebuild the report (Markdown + HTML) from the Parquet tables
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
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pruneflow import config
from pruneflow.errors import PruneflowError

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
FLOWS = ("all", "dense", "spdy", "sdd", "chex")


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
    root = _code_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return config.load(params_file, overrides or [])


def _connect(params: config.Params) -> None:
    from pruneflow.prefect_env import configure_environment, ensure_local_server, require_server
    from pruneflow.steps.base import say, state_dir

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


def _summary(flow: str, records: list[dict[str, Any]], wall: float) -> None:
    from pruneflow.run_summary import print_steps, write_run_log

    console = Console()
    print_steps(console, records, wall)
    write_run_log(flow, records, wall)
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
            _results_table(console, r["params"]["model.name"], r["summary"]["table"])
    report = next((r for r in records if r["step"] == "report"), None)
    if report is not None:
        console.print(f"report: {report['summary']['html']} (and {report['summary']['markdown']})")


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


def _results_table(console: Console, model: str, rows: list[dict[str, Any]]) -> None:
    """SPDY after gradual pruning, in the paper's Table 4 layout, measured speedups beside."""
    import pandas as pd

    from pruneflow.steps.spdy_gmp import results_table

    head, rows_ = results_table(pd.DataFrame(rows))
    table = Table(title=f"SPDY gradual pruning on {model}: test accuracy % (measured speedup)")
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
    params = _load(params_file, overrides)
    started = time.perf_counter()
    _connect(params)
    if target == "dense":
        from flows.dense import dense as chosen
    elif target == "spdy":
        from flows.spdy import spdy as chosen
    elif target == "sdd":
        from flows.double_descent import double_descent as chosen
    elif target == "chex":
        from flows.chex import chex as chosen
    else:
        from flows.pipeline import pipeline as chosen
    from pruneflow.prefect_env import server_watchdog
    from tasks.runner import with_runner

    with server_watchdog(os.environ.get("PREFECT_API_URL")):
        records = with_runner(chosen, params)(params.model_dump(mode="json"))
    _summary(target, records, time.perf_counter() - started)


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
    params = config.scoped(_load(params_file, overrides), scope)
    if item:
        STEPS[name].run(params, force=force, item=dict(map(config.parse_override, item)))
    else:
        STEPS[name].run_all(params, force=force)


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
    from pruneflow.steps.base import state_dir

    url, fresh = ensure_local_server(state_dir())
    typer.echo(f"{'started' if fresh else 'running'}: {url}")


@server_app.command("stop")
@_user_errors
def server_stop() -> None:
    """Stop the local Prefect server started by pruneflow."""
    from pruneflow.prefect_env import stop_local_server
    from pruneflow.steps.base import state_dir

    typer.echo("stopped" if stop_local_server(state_dir()) else "no server was running")


@server_app.command("status")
@_user_errors
def server_status() -> None:
    """Print the local Prefect server's URL, or say that none is running."""
    from pruneflow.prefect_env import server_status as status
    from pruneflow.steps.base import state_dir

    url = status(state_dir())
    typer.echo(url or "no server running")
