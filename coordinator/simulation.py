"""`pollen simulate`: one coordinator and N client processes on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from coordinator.client.local_data import FileData
from coordinator.data.dataset import Dataset
from coordinator.data.schema import DataSchema
from coordinator.data.shard_file import write_dataset, write_picture_shards, write_shard, write_table_shards
from coordinator.models.spec import ModelSpec
from coordinator.server.app import Coordinator
from coordinator.server.gateways import GatewayFactory
from coordinator.serving import BackgroundServer
from coordinator.settings import Settings


@dataclass(frozen=True)
class Population:
    clients: int
    backend: str = "python"
    partition: str = "iid"
    data_seed: int = 0
    poisoned: int = 0
    poison_scale: float = 100.0
    dropouts: int = 0
    dropout_round: int = 2
    webgpu: bool = False  # browsers: launch Chromium with the SwiftShader WebGPU adapter
    screenshots: Path | None = None  # browsers: save each page's screenshot here when it stops
    data: Path | None = None  # the clients' data (client i trains on shard i); None: the MNIST demo digits
    holdout: float = 0.1  # with `data`: what each client keeps out of training for federated evaluation
    threads: int | None = None  # wasm and browsers: each one's CPU trainer threads; None: see `threads_each`


WEB_BIN = Path(__file__).resolve().parents[1] / "client_web" / "bin"
BACKENDS = ("python", "wasm", "browser")
# Central scores besides accuracy and loss, and the clients' own (federated evaluation), as a round reports them.
SCORES = ("macro_f1", "mse", "mae", "federated_accuracy", "federated_loss")


@dataclass(frozen=True)
class RunData:
    """What the clients' data files are prepared by: the run's model and data schema."""

    spec: ModelSpec
    schema: DataSchema | None


def threads_each(pop: Population) -> int | None:
    """Each client's CPU threads: `pop.threads`, else its share of this machine's cores (at least one),
    since the clients all train at once here and more threads than cores would only take turns. None
    for a lone client: it takes its own default (a page, all the cores; join.mjs, one thread)."""
    if pop.threads is not None:
        if pop.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {pop.threads}")
        return pop.threads
    return None if pop.clients == 1 else max(1, (os.cpu_count() or 1) // pop.clients)


def client_commands(
    url: str, pop: Population, settings: Settings, workdir: Path, run: RunData | None = None
) -> list[list[str]]:
    """One process per client, except browsers: one Chromium with a page per client.

    With `pop.data`, the data is prepared and split here once first, so a file the clients could not use is
    refused (naming the row or sample) before any client starts."""
    if pop.threads is not None and pop.backend == "python":
        raise ValueError("--threads is for wasm and browser clients; Python clients train on one torch thread each")
    split: tuple[Dataset, list[np.ndarray]] | None = None
    if pop.data is not None:
        if run is None:
            raise ValueError("--data needs the run's model and data schema")
        split = FileData(pop.data, 1, pop.clients, pop.partition, pop.data_seed).split(run.schema, run.spec)
    if pop.backend == "browser":
        if pop.poisoned or pop.dropouts:
            raise ValueError("poisoned and dropout clients are Python-only test hooks")
        if pop.data is not None and split is not None:  # each page picks its shard in the page's own file picker
            if run is None or run.schema is None or run.schema.kind == "tensor":
                raise ValueError("browser pages take --data as a table or a folder of pictures, with --test-data")
            if run.schema.kind == "table":
                write_table_shards(pop.data, split[1], workdir / "pages")
            else:
                write_picture_shards(pop.data, run.schema, split[1], workdir / "pages")
        base = url.replace("ws://", "http://").removesuffix("/ws")  # the page asks /api/join itself
        cmd = ["node", str(WEB_BIN / "browsers.mjs"), base, "--clients", str(pop.clients)]
        cmd += ["--token", settings.join_token] if settings.join_token else []
        cmd += ["--webgpu"] if pop.webgpu else []
        cmd += ["--threads", str(threads)] if (threads := threads_each(pop)) is not None else []
        cmd += ["--data-dir", str(workdir / "pages")] if pop.data is not None else []
        return [cmd + (["--screenshots", str(pop.screenshots)] if pop.screenshots else [])]
    prepared = [split[0].take(idx) for idx in split[1]] if split is not None and pop.backend == "wasm" else None
    return [client_command(url, i, pop, settings, workdir, prepared) for i in range(pop.clients)]


def client_command(
    url: str, index: int, pop: Population, settings: Settings, workdir: Path, prepared: list[Dataset] | None = None
) -> list[str]:
    """`prepared`: each client's shard of `pop.data`, for clients that cannot prepare it themselves (WASM)."""
    if pop.backend == "wasm":
        if pop.poisoned or pop.dropouts:
            raise ValueError("poisoned and dropout clients are Python-only test hooks")
        data = workdir / f"shard-{index + 1}.safetensors"
        if pop.data is None:
            write_shard(data, index + 1, pop.clients, pop.partition, pop.data_seed)
        else:  # prepared here as the run's schema says: the trainer reads arrays of the model's input
            assert prepared is not None, "client_commands prepared them"
            write_dataset(data, prepared[index])
        cmd = ["node", str(WEB_BIN / "join.mjs"), url, "--data", str(data), "--quiet", "--give-up-after", "60"]
        threads = threads_each(pop)  # join.mjs's own default is the single-threaded build
        cmd += ["--threads", str(threads)] if threads is not None and threads > 1 else []
        return cmd + (["--token", settings.join_token] if settings.join_token else [])
    if pop.backend != "python":
        raise ValueError(f"unknown backend {pop.backend!r}: one of {', '.join(BACKENDS)}")
    cmd = [sys.executable, "-m", "coordinator", "join", url, "--shard", f"{index + 1}/{pop.clients}"]
    if pop.data is not None:
        cmd += ["--data", str(pop.data), "--holdout", str(pop.holdout)]
    # Clients outliving a killed simulation must not retry forever.
    cmd += ["--partition", pop.partition, "--data-seed", str(pop.data_seed), "--quiet", "--give-up-after", "60"]
    if settings.join_token:
        cmd += ["--token", settings.join_token]
    if index < pop.poisoned:
        cmd += ["--poison-scale", str(pop.poison_scale)]
    elif index < pop.poisoned + pop.dropouts:
        cmd += ["--drop-in-round", str(pop.dropout_round)]
    return cmd


def simulate(
    settings: Settings,
    pop: Population,
    json_out: Path | None,
    console: Console,
    gateways: GatewayFactory | None = None,
) -> dict[str, Any]:
    """Run a federation here; with `gateways` (`--gateways N`), clients reach them through /api/join."""
    workdir = Path(tempfile.mkdtemp(prefix="pollen-sim-"))
    if not settings.wait_for:  # start when the whole population is there, not with the first two
        settings = Settings.from_dict({**settings.to_dict(), "wait_for": pop.clients})
    coordinator = Coordinator(settings, gateways)
    server = BackgroundServer(coordinator)
    server.start(timeout=120)
    url = server.url if gateways is None else f"http://127.0.0.1:{server.port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "POLLEN_TORCH_THREADS": "1"}
    procs = []
    run = RunData(coordinator.run_loop.spec, coordinator.run_loop.data_schema)
    try:
        commands = client_commands(url, pop, settings, workdir, run)
    except ValueError:
        server.stop()
        coordinator.store.close()
        raise
    for i, cmd in enumerate(commands):
        log = open(workdir / f"client-{i + 1}.log", "wb")  # noqa: SIM115 - closed with the process below
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=log, env=env), log))
    status = coordinator.status
    try:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task(
                "rounds", total=coordinator.run_loop.run.num_rounds, info="", completed=status.current_round
            )
            while not status.finished.wait(0.5):
                if all(proc.poll() is not None for proc, _ in procs):
                    raise RuntimeError(f"every client exited before the run finished; see the logs in {workdir}")
                snap = status.snapshot()
                last = snap["rounds"][-1] if snap["rounds"] else None
                info = f"{coordinator.nodes.count()} clients"
                if last and last["accuracy"] is not None:
                    info += f"  acc {last['accuracy']:.4f}"
                if last and last["epsilon"] is not None:
                    info += f"  ε {last['epsilon']:.2f}"
                if snap["state"] == "waiting":
                    info = snap["message"]
                progress.update(task, completed=snap["current_round"], info=info)
            progress.update(task, completed=status.current_round)
        gateways_seen = coordinator.gateways.describe() if coordinator.gateways is not None else []
    finally:
        for proc, _ in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for _, log in procs:
            log.close()
        server.stop()
        coordinator.store.close()
    snap = status.snapshot()
    rounds = [
        {k: r[k] for k in ("round", "accuracy", "loss", "clients", "seconds", "epsilon")}
        | {k: r["metrics"].get(k) for k in ("bytes_out", "bytes_in", *SCORES)}
        for r in snap["rounds"]
    ]
    result = {
        "run_id": snap["run_id"],
        "state": snap["state"],
        "final_accuracy": rounds[-1]["accuracy"] if rounds else None,
        "rounds": rounds,
        "client_logs": str(workdir),
        "gateways": gateways_seen,
    }
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    if coordinator.error is not None:
        raise RuntimeError(f"the run failed: {coordinator.error}") from coordinator.error
    return result
