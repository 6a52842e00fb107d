"""Gateways on a local Ray instance: the coordinator's memory per round as clients grow, with and without them.

`python -m bench.scale --gateways N [--clients 100,1000]` runs, for each K, a few FedAvg
rounds of mnist-cnn with K load-generator clients, first on the coordinator's own `/ws`,
then through N gateways (clients spread by `/api/join`), and prints the coordinator's extra
peak memory per round ÷ the model (it must not grow with K behind gateways: the coordinator
holds one accumulator and the gateways' partials), each gateway's, and the round's seconds.
All processes share this machine's cores, so the seconds say what gateways cost here, not
what they buy on more machines.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.loadgen import LoadGenerator
from bench.scale import Server, free_port, model_bytes, processes_for


def gateway_pids() -> list[int]:
    """The processes of this machine's gateway actors (Ray titles them `ray::Gateway…`)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "cmdline").read_bytes().startswith(b"ray::Gateway"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return sorted(pids)


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def rounds_through(workdir: Path, k: int, gateways: int, model: str = "mnist-cnn") -> dict[str, Any]:
    """K clients, two rounds: the coordinator's and each gateway's baseline and peak memory, and round 2."""
    flags: dict[str, object] = {"gateways": gateways, "gateway_port": free_port()} if gateways else {}
    server = Server(workdir, model=model, rounds=5, min_clients=k, wait_for=k, overselect=1, evaluate_every=0,
                    max_connections_per_address=0, max_messages_per_second=1000, message_burst=1000,
                    round_timeout=1800, local_epochs=1, max_receiving_bytes=2 * model_bytes(model),
                    **flags)  # fmt: skip
    gen = LoadGenerator(server.http if gateways else server.url, k, processes_for(k))
    try:
        server.admin("pause")
        gen.start()
        gen.wait_joined()
        time.sleep(2)
        pids = gateway_pids()
        baseline, gw_baseline = server.rss(), [_status(p, "VmRSS") for p in pids]
        server.reset_peak()
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        server.admin("resume")
        server.wait_round(2)
        server.admin("pause")
        status = server.settle()
        peak, gw_peak = server.peak(), [_status(p, "VmHWM") for p in pids]
    finally:
        gen.stop()
        server.stop()
    second = next(r for r in status["rounds"] if r["round"] == 2)
    gw_extra = [p - b for p, b in zip(gw_peak, gw_baseline, strict=True)]
    return {"k": k, "gateways": gateways, "extra": peak - baseline, "gateway_extra": gw_extra, "round2": second}


def sweep(workdir: Path, ks: list[int], gateways: int, console: Console) -> list[dict[str, Any]]:
    out = []
    for k in ks:
        for n in (0, gateways):
            with console.status(f"mnist-cnn, {k} clients, {n} gateways"):
                out.append(rounds_through(workdir, k, n))
    report(out, console)
    return out


def report(out: list[dict[str, Any]], console: Console) -> None:
    size = model_bytes("mnist-cnn")
    table = Table(title=f"Through gateways: memory per round ÷ model (mnist-cnn, {size / 1e6:.2f} MB), FedAvg")
    for col in ("K", "gateways", "coordinator extra ÷ model", "each gateway's extra ÷ model", "round 2 s", "failed"):
        table.add_column(col, justify="right")
    for r in out:
        each = ", ".join(f"{e / size:.2f}" for e in r["gateway_extra"]) or "-"
        table.add_row(str(r["k"]), str(r["gateways"]), f"{r['extra'] / size:.2f}", each,
                      f"{r['round2']['seconds']:.2f}", str(r["round2"]["failures"]))  # fmt: skip
    console.print(table)
