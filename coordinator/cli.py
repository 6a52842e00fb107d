"""The `pollen` command line: serve, join, simulate, shard, export, model check."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from coordinator.logs import setup_logging
from coordinator.options import with_settings
from coordinator.settings import Settings, redact_url

if TYPE_CHECKING:
    from coordinator.server.gateways import GatewayFactory

DATA_HELP = (
    "Train on this data instead of the MNIST demo digits: an .npz or .safetensors of x and y, a CSV or Parquet"
    " table, or a folder of class folders of pictures, prepared as the run's data schema says (SPEC 2.3)."
)
PARTITION_HELP = "iid, dirichlet:ALPHA (label skew) or shards:S (S label-sorted pieces per client)."
HOLDOUT_HELP = "With --data: the fraction kept out of training for federated evaluation."

app = typer.Typer(help="Pollen: federated learning with browser clients.", no_args_is_help=True, add_completion=False)
model_app = typer.Typer(help="Model specs.", no_args_is_help=True)
app.add_typer(model_app, name="model")
console = Console(stderr=True)


def _logging(level: int, json_lines: bool = False) -> None:
    setup_logging(level, console, json_lines=json_lines)


@app.command()
@with_settings()
def serve(
    settings: Settings,
    log_json: Annotated[bool, typer.Option(envvar="POLLEN_LOG_JSON", help="Log one JSON object per line.")] = False,
) -> None:
    """Run the coordinator: HTTP and WebSocket on one port, rounds driven by a Flower strategy."""
    from coordinator.server.app import Coordinator
    from coordinator.serving import serve_forever

    _logging(logging.INFO, log_json)
    try:
        coordinator = Coordinator(settings, gateway_pool(settings))
    except ValueError as exc:  # what to train cannot be trained: the model, the test data, the settings
        raise typer.BadParameter(str(exc)) from None
    console.print(f"[bold green]pollen[/] serving on http://{settings.host}:{settings.port}  (clients: /ws)")
    console.print(f"database: {redact_url(settings.db)}", markup=False, highlight=False)
    serve_forever(coordinator)


def gateway_pool(settings: Settings) -> GatewayFactory | None:
    """The factory of `--gateways`' pool (None without gateways: no Ray is imported)."""
    if not settings.gateways:
        return None
    from coordinator.cluster.pool import GatewayPool

    return lambda host: GatewayPool(settings, host)


@app.command()
def join(
    url: Annotated[
        str,
        typer.Argument(
            help="The coordinator's address, e.g. http://127.0.0.1:8080 (asks /api/join where to connect:"
            " a gateway, or its own /ws), or a WebSocket URL, e.g. ws://127.0.0.1:8080/ws."
        ),
    ],
    token: Annotated[str | None, typer.Option(envvar="POLLEN_JOIN_TOKEN", help="Join token.")] = None,
    data: Annotated[Path | None, typer.Option(help=DATA_HELP)] = None,
    shard: Annotated[str, typer.Option(help="Train on shard K of N (1-based) of the data, e.g. 3/10.")] = "1/1",
    partition: Annotated[str, typer.Option(help=PARTITION_HELP)] = "iid",
    data_seed: Annotated[int, typer.Option(help="Seed of the partition (all clients must agree).")] = 0,
    holdout: Annotated[float, typer.Option(help=HOLDOUT_HELP)] = 0.1,
    give_up_after: Annotated[float | None, typer.Option(help="Exit after this many seconds unconnected.")] = None,
    poison_scale: Annotated[
        float | None, typer.Option(help="Robustness experiments: scale every delta by this.")
    ] = None,
    drop_in_round: Annotated[
        int | None, typer.Option(help="Fault experiments: vanish mid-round in this round.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="Log warnings only.")] = False,
) -> None:
    """Run one headless Python client against a running coordinator."""
    import torch

    from coordinator.client.agent import AgentOptions, run_agent
    from coordinator.client.local_data import ClientData, FileData, LocalData
    from coordinator.client.worker import TaskWorker
    from coordinator.data.mnist import load_split
    from coordinator.data.partition import partition as split

    _logging(logging.WARNING if quiet else logging.INFO)
    if threads := int(os.environ.get("POLLEN_TORCH_THREADS", "0")):
        torch.set_num_threads(threads)
    k, n = _shard(shard)
    local: ClientData
    try:
        if data is not None:
            local = FileData(data, k, n, partition, data_seed, holdout)
        else:  # the MNIST demo digits, trained and evaluated on as they are
            train = load_split("train")
            idx = split(train.y, n, partition, data_seed)[k - 1]
            local = LocalData(train.x[idx], train.y[idx])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    worker = TaskWorker(local, poison_scale=poison_scale)
    options = AgentOptions(url, token, give_up_after=give_up_after, drop_in_round=drop_in_round)
    raise typer.Exit(asyncio.run(run_agent(options, worker)))


@app.command()
@with_settings(db=None, port=0, max_connections_per_address=0)  # every simulated client shares one address
def simulate(
    settings: Settings,
    clients: Annotated[int, typer.Option(help="Number of client processes.")] = 10,
    backend: Annotated[
        str,
        typer.Option(help="Clients: python (torch), wasm (the Burn trainer under Node), browser (headless Chromium)."),
    ] = "python",
    webgpu: Annotated[bool, typer.Option(help="Browsers: give Chromium the SwiftShader WebGPU adapter.")] = False,
    threads: Annotated[
        int | None,
        typer.Option(help="WASM and browsers: each client's CPU threads. Unset: the cores shared among the clients."),
    ] = None,
    data: Annotated[Path | None, typer.Option(help=DATA_HELP + " Client i trains on shard i of N.")] = None,
    partition: Annotated[str, typer.Option(help=PARTITION_HELP)] = "iid",
    data_seed: Annotated[int, typer.Option(help="Seed of the data partition.")] = 0,
    holdout: Annotated[float, typer.Option(help=HOLDOUT_HELP)] = 0.1,
    poisoned: Annotated[int, typer.Option(help="How many clients send poisoned deltas.")] = 0,
    poison_scale: Annotated[float, typer.Option(help="Poisoned clients scale their delta by this.")] = 100.0,
    dropouts: Annotated[int, typer.Option(help="How many clients vanish mid-round.")] = 0,
    dropout_round: Annotated[int, typer.Option(help="The round in which they vanish.")] = 2,
    json_out: Annotated[Path | None, typer.Option(help="Write the run's results here as JSON.")] = None,
) -> None:
    """Start a coordinator and N headless clients on this machine and run a federation."""
    from coordinator.simulation import Population
    from coordinator.simulation import simulate as run

    _logging(logging.WARNING)
    if settings.db is None:
        settings = Settings.from_dict(
            {**settings.to_dict(), "db": f"sqlite:///{tempfile.mkdtemp(prefix='pollen-')}/pollen.db"}
        )
    pop = Population(clients, backend, partition, data_seed, poisoned, poison_scale, dropouts, dropout_round, webgpu,
                     data=data, holdout=holdout, threads=threads)  # fmt: skip
    try:
        result = run(settings, pop, json_out, console, gateway_pool(settings))
    except ValueError as exc:  # the data or the settings, refused before any client starts
        raise typer.BadParameter(str(exc)) from None
    console.print(f"final accuracy: [bold]{result['final_accuracy']}[/]  (client logs: {result['client_logs']})")


@app.command()
@with_settings()
def shard(
    settings: Settings,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the shard (.safetensors).")],
    data: Annotated[Path | None, typer.Option(help=DATA_HELP)] = None,
    shard: Annotated[str, typer.Option(help="Shard K of N (1-based), e.g. 3/10.")] = "1/1",
    partition: Annotated[str, typer.Option(help=PARTITION_HELP)] = "iid",
    data_seed: Annotated[int, typer.Option(help="Seed of the partition.")] = 0,
) -> None:
    """Write a training shard as a data file for non-Python clients (x: float32, y: int64, or float32 targets).

    With --data, the shard is prepared as a run of these settings (--model, --test-data, --label-column)
    prepares it: a table standardised by the test set's statistics, labels numbered by its class list.
    """
    from coordinator.data.shard_file import write_dataset, write_shard
    from coordinator.federation.evaluation import run_data_schema
    from coordinator.models.spec import load_spec

    k, n = _shard(shard)
    if data is None:
        size = write_shard(output, k, n, partition, data_seed)
        console.print(f"wrote {size} digits (shard {k}/{n}, {partition}) to {output}")
        return
    from coordinator.client.local_data import FileData

    try:
        spec = load_spec(settings.model)
        schema = run_data_schema(spec, settings.test_data, settings.label_column, settings.classes)
        train, _ = FileData(data, k, n, partition, data_seed, holdout=0).prepare(schema, spec)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    write_dataset(output, train)
    console.print(f"wrote {len(train)} examples of {data} (shard {k}/{n}, {partition}) to {output}")


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
        if 1 <= k <= n:
            return k, n
    except ValueError:
        pass
    raise typer.BadParameter(f"--shard must be K/N with 1 <= K <= N, got {text!r}")


@app.command()
def export(
    output: Annotated[Path, typer.Option("-o", "--output", help="model.pt or model.safetensors")],
    db: Annotated[str, typer.Option(envvar="POLLEN_DB", help="SQLAlchemy URL.")] = "sqlite:///pollen.db",
    run: Annotated[str | None, typer.Option(help="Run id (default: the newest run).")] = None,
    round: Annotated[int | None, typer.Option(help="Round (default: the last completed).")] = None,
) -> None:
    """Write a run's global model as a file PyTorch's load_state_dict accepts."""
    from coordinator.models.spec import spec_from_dict
    from coordinator.models.weights_file import write_weights
    from coordinator.persistence.store import Store
    from coordinator.protocol.tensors import decode_tensors

    store = Store(db)
    try:
        info = store.get_run(run)
        got, weights = store.checkpoint(info.id, round)
    except LookupError as exc:
        raise typer.BadParameter(str(exc)) from None
    finally:
        store.close()
    write_weights(output, spec_from_dict(info.model_spec), decode_tensors(weights))
    console.print(f"wrote run {info.id} round {got} ({info.model_spec['name']}) to {output}")


@app.command()
def rounds(
    output: Annotated[Path, typer.Option("-o", "--output", help="rounds.csv or rounds.json")],
    db: Annotated[str, typer.Option(envvar="POLLEN_DB", help="SQLAlchemy URL.")] = "sqlite:///pollen.db",
    run: Annotated[str | None, typer.Option(help="Run id (default: the newest run).")] = None,
) -> None:
    """Write a run's rounds: the central scores, the clients' own evaluation, clients, bytes and seconds."""
    import csv

    from coordinator.persistence.store import Store

    store = Store(db)
    try:
        info = store.get_run(run)
        records = [r.to_dict() for r in store.rounds(info.id)]
    except LookupError as exc:
        raise typer.BadParameter(str(exc)) from None
    finally:
        store.close()
    # The record's own fields first; a metric of the same name (failures: the list) does not replace them.
    flat = [{k: v for k, v in r.items() if k != "metrics"} | {k: v for k, v in r["metrics"].items() if k not in r}
            for r in records]  # fmt: skip
    if output.suffix.lower() == ".json":
        output.write_text(json.dumps({"run_id": info.id, "rounds": flat}, indent=2) + "\n")
    else:
        columns = list(dict.fromkeys(k for r in flat for k in r if not isinstance(r[k], dict | list)))
        with output.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(flat)
    console.print(f"wrote {len(flat)} rounds of run {info.id} to {output}")


@model_app.command("check")
def model_check(
    spec: Annotated[str, typer.Argument(help="A spec file (JSON), or a built-in model's name, e.g. mnist-cnn.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Validate a model spec and print its parameters (PyTorch state_dict names, shapes, counts) and sizes."""
    from rich.table import Table

    from coordinator.models.spec import load_spec
    from coordinator.models.summary import summarize

    try:
        loaded = load_spec(spec)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{spec} is not JSON: {exc}", param_hint="SPEC") from None
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(f"{spec}: {exc}", param_hint="SPEC") from None
    summary = summarize(loaded)
    out = Console()
    if as_json:
        out.print_json(json.dumps(summary.to_dict()))
        return
    table = Table(title=f"{summary.name}: input {list(summary.input_shape)}, {summary.num_classes} classes, "
                  f"{summary.layers} layers")  # fmt: skip
    for column in ("parameter", "shape", "values"):
        table.add_column(column, justify="left" if column == "parameter" else "right")
    for p in summary.parameters:
        table.add_row(p.name, str(list(p.shape)), f"{p.count:,}")
    table.add_section()
    table.add_row("in all", "", f"{summary.count:,}")
    out.print(table)
    sizes = ", ".join(f"{e} {summary.data_bytes(e) / 1e6:.3f} MB" for e in ("fp32", "fp16", "int8"))
    out.print(f"weights on the wire: {sizes}")


@model_app.command("from-torch")
def model_from_torch(
    factory: Annotated[str, typer.Argument(help="MODULE:FACTORY, e.g. my_models:Net or models/net.py:make_net.")],
    input_shape: Annotated[str, typer.Option(help="One example's shape, without the batch: e.g. 1,28,28.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the spec (JSON).")],
    weights: Annotated[
        Path | None, typer.Option(help="Also write the module's weights here (.safetensors or .pt), for serve --init.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="The spec's name (default: the factory's).")] = None,
    input_dtype: Annotated[str, typer.Option(help="float32, or int64 for token ids.")] = "float32",
    loss: Annotated[str, typer.Option(help="cross_entropy, mse or bce_with_logits.")] = "cross_entropy",
    label_smoothing: Annotated[float, typer.Option(help="For cross_entropy.")] = 0.0,
) -> None:
    """Convert a PyTorch nn.Module to a model spec with torch.fx, and check the two give the same outputs."""
    from coordinator.models.from_torch import convert
    from coordinator.models.spec import spec_from_dict
    from coordinator.models.user_module import load_user_module
    from coordinator.models.weights_file import write_weights

    try:
        shape = tuple(int(d) for d in input_shape.split(","))
    except ValueError:
        raise typer.BadParameter(f"{input_shape!r} is not a comma-separated list of sizes") from None
    objective: dict[str, object] = {"type": loss}
    if loss == "cross_entropy" and label_smoothing:
        objective["label_smoothing"] = label_smoothing
    try:
        module = load_user_module(factory)
        done = convert(module, shape, name=name or factory.rpartition(":")[2], input_dtype=input_dtype,
                       loss=None if objective == {"type": "cross_entropy"} else objective)  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="FACTORY") from None
    output.write_text(json.dumps(done.spec, indent=2) + "\n")
    console.print(f"wrote {output}: {len(done.spec['layers'])} layers; outputs match within {done.max_error:.2g}")
    for key in done.unused:
        console.print(f"[yellow]warning:[/] {key} is not used by forward, so it is not in the spec")
    if weights is not None:
        write_weights(weights, spec_from_dict(done.spec), done.weights)
        console.print(f"wrote {weights}: the module's weights, for pollen serve --init")
