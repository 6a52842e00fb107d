"""Gateways on a local Ray instance: the coordinator's memory per round as clients grow, with and without them.

`python -m bench.scale --gateways N [--clients 100,1000]` runs, for each K, a few FedAvg
rounds of mnist-cnn with K load-generator clients, first on the coordinator's own `/ws`,
then through N gateways (clients spread by `/api/join`), and prints the coordinator's extra
peak memory per round ÷ the model (it must not grow with K behind gateways: the coordinator
holds one accumulator and the gateways' partials), each gateway's, and the round's seconds.
A process's resident memory counts the pages of Ray's object store that it maps (the round's
weights, put once per node, and the partials): each one's peak is also split into its own
memory (RssAnon) and those shared pages (RssShmem), sampled every 10 ms.
All processes share this machine's cores, so the seconds say what gateways cost here, not
what they buy on more machines.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.loadgen import LoadGenerator
from bench.scale import Server, free_port, model_bytes, proc_status, processes_for


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
    return proc_status(pid, field)[0]


class PeakSampler:
    """The highest RssAnon and RssShmem of each process, sampled every `interval` s while it runs."""

    def __init__(self, pids: list[int], interval: float = 0.01) -> None:
        self.pids, self.interval = pids, interval
        self.anon = [0] * len(pids)
        self.shmem = [0] * len(pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, pid in enumerate(self.pids):
                try:
                    anon, shmem = proc_status(pid, "RssAnon", "RssShmem")
                except (OSError, KeyError):
                    continue  # a gateway killed or restarted meanwhile
                self.anon[i], self.shmem[i] = max(self.anon[i], anon), max(self.shmem[i], shmem)
            self._stop.wait(self.interval)


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
        sampled_pids = [server.proc.pid, *pids]  # the coordinator first
        anon, shmem = zip(*(proc_status(p, "RssAnon", "RssShmem") for p in sampled_pids), strict=True)
        server.reset_peak()
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        with PeakSampler(sampled_pids) as sampled:
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
    own = [p - b for p, b in zip(sampled.anon, anon, strict=True)]
    shared = [p - b for p, b in zip(sampled.shmem, shmem, strict=True)]
    return {"k": k, "gateways": gateways, "extra": peak - baseline, "own_extra": own[0], "shared_extra": shared[0],
            "gateway_extra": gw_extra, "gateway_own_extra": own[1:], "gateway_shared_extra": shared[1:],
            "round2": second}  # fmt: skip


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
    for col in ("K", "gateways", "coordinator extra ÷ model", "its own (anon)", "object store pages (shmem)",
                "each gateway's extra ÷ model", "its own (anon)", "object store pages (shmem)", "round 2 s",
                "failed"):  # fmt: skip
        table.add_column(col, justify="right")

    def each(values: list[int]) -> str:
        return ", ".join(f"{v / size:.2f}" for v in values) or "-"

    for r in out:
        table.add_row(str(r["k"]), str(r["gateways"]), f"{r['extra'] / size:.2f}", f"{r['own_extra'] / size:.2f}",
                      f"{r['shared_extra'] / size:.2f}", each(r["gateway_extra"]),
                      each(r["gateway_own_extra"]), each(r["gateway_shared_extra"]),
                      f"{r['round2']['seconds']:.2f}", str(r["round2"]["failures"]))  # fmt: skip
    console.print(table)
