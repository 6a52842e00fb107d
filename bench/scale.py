"""Thousands of browsers on one coordinator: memory, aggregation, overhead, idle connections and bytes per round.

Starts `pollen serve` and the load generator (`bench.loadgen`: fake clients that speak the
protocol and answer at once, so a round costs only the coordinator's work and the wire) and
prints, from one run on this machine:

* extra memory in a round ÷ model bytes, at each K, with --max-receiving-bytes at
  `--receiving` models (the first value for every K; K = 1,000 again at each other value):
  the coordinator's peak RSS over rounds 1–2 or more (VmHWM, reset through
  /proc/PID/clear_refs once the K clients are connected and idle) minus that idle baseline;
  and its RSS once the paused run is held between phases (memory given back);
* aggregation throughput (delta bytes ÷ the seconds spent decoding, checking and folding
  them, from the round's own record) ÷ memory-copy bandwidth (np.copyto of 256 MiB, here);
* round time ÷ wire time at K = 100: the coordinator's median round once warm (rounds 3 to
  10; no client trains) against the median of 7 runs of `bench.wire_sink`, the same uvicorn
  stack sending the same chunked task to the same fake clients and reading their replies,
  with no federation behind it. The round is timed with the coordinator's default receiving
  budget (256 MiB), then with the memory sweep's: the wire stack has no budget, and a budget
  of half a model reads one upload at a time, by design;
* memory per idle connection, and /healthz latency (p50, p99, max) while N clients are
  connected, idle but for their heartbeats;
* bytes per client per round ÷ the fp32 model, down and up (relative to 2× the model).

Central evaluation is off (--evaluate-every 0): it is a fixed cost per round, not one that
grows with the clients, and it is measured by the other benchmarks.

    python -m bench.scale [--clients 10,100,1000,3000] [--idle 10000] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from bench.loadgen import LoadGenerator
from coordinator.models.spec import load_spec

TOKEN = "bench-admin"
# How often a run's progress is read: soon enough to pause a run of 0.1 s rounds before its last round.
POLL_SECONDS = 0.05
OVERHEAD_ROUNDS = 10  # at K = 100: the round time is the median of rounds 3 to this one
console = Console()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port}")


def proc_status(pid: int, *fields: str) -> list[int]:
    """`fields` of /proc/PID/status in bytes, from one read of the file."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in fields:
            values[name] = int(rest.split()[0]) * 1024
    return [values[f] for f in fields]  # KeyError for a field the kernel does not report


class Server:
    """`pollen serve` in a subprocess, with a fresh SQLite database and the admin API on."""

    def __init__(self, workdir: Path, **flags: object) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "coordinator", "serve", "--port", str(self.port), "--new-run"]
        args += ["--db", f"sqlite:///{workdir}/scale-{self.port}.db", "--admin-token", TOKEN]
        for name, value in flags.items():
            if value is not None:  # None: the coordinator's default
                args += [f"--{name.replace('_', '-')}", str(value)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.http = f"http://127.0.0.1:{self.port}"
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        wait_http(self.http + "/healthz")
        # One connection for every status read: a new client per poll cost this process a quarter of a
        # core, on the two cores the coordinator and the load generator share.
        self.client = httpx.Client(base_url=self.http, timeout=10)

    def rss(self) -> int:
        return proc_status(self.proc.pid, "VmRSS")[0]

    def peak(self) -> int:
        return proc_status(self.proc.pid, "VmHWM")[0]

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def admin(self, action: str) -> dict[str, Any]:
        """POST an admin action; the run's state after it."""
        response = httpx.post(f"{self.http}/api/admin/{action}", headers={"Authorization": f"Bearer {TOKEN}"})
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.client.get("/api/status").json()
        return result

    def wait_round(self, n: int, timeout: float = 1800) -> None:
        deadline = time.monotonic() + timeout
        while self.status()["current_round"] < n:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"round {n} did not complete")
            time.sleep(POLL_SECONDS)

    def settle(self, timeout: float = 1800) -> dict[str, Any]:
        """The status once the paused run is held between phases (a round under way when paused ends first)."""
        deadline = time.monotonic() + timeout
        while not self.admin("pause")["held"]:  # pausing again changes nothing; it answers the run's state
            if time.monotonic() > deadline:
                raise RuntimeError("the paused run was not held within the timeout")
            time.sleep(0.2)
        time.sleep(1.0)  # spares, replies in flight: what a held run still lets go of
        return self.status()

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def model_bytes(model: str) -> int:
    return 4 * load_spec(model).num_parameters()


def copy_bandwidth() -> float:
    """Bytes per second np.copyto moves between two 256 MiB buffers (best of 5)."""
    src = np.ones(64 << 20, np.float32)
    dst = np.empty_like(src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(5))
    return src.nbytes / best


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def processes_for(k: int) -> int:
    return 1 if k <= 100 else 2 if k <= 1000 else 4


def rounds_at(workdir: Path, k: int, model: str, receiving: int | None, rounds: int = 2) -> dict[str, Any]:
    """K clients, `rounds` rounds or more: memory (baseline, peak, after), round 2's record, every round's seconds.

    `receiving`: the coordinator's --max-receiving-bytes (None: its default)."""
    server = Server(workdir, model=model, rounds=rounds + 3, min_clients=k, wait_for=k, overselect=1, evaluate_every=0,
                    max_connections_per_address=0, max_messages_per_second=1000, message_burst=1000,
                    round_timeout=1800, local_epochs=1, max_receiving_bytes=receiving)  # fmt: skip
    gen = LoadGenerator(server.url, k, processes_for(k))
    try:
        server.admin("pause")  # the run waits before round 1 while the clients join
        gen.start()
        gen.wait_joined()
        time.sleep(2)
        baseline = server.rss()
        server.reset_peak()
        started = time.monotonic()
        server.admin("resume")
        server.wait_round(rounds)
        server.admin("pause")  # the next round to start waits: clients stay connected, idle
        seconds = time.monotonic() - started
        status = server.settle()
        peak, after = server.peak(), server.rss()
    finally:
        gen.stop()
        server.stop()
    second = next(r for r in status["rounds"] if r["round"] == 2)
    return {"k": k, "baseline": baseline, "peak": peak, "after": after, "rounds_done": status["current_round"],
            "wall_seconds": seconds, "round2": second,
            "round_seconds": [r["seconds"] for r in sorted(status["rounds"], key=lambda r: r["round"])]}  # fmt: skip


def steady_round(rounds: dict[str, Any]) -> float:
    """The median round once warm: rounds 1 and 2 pay for first touches (pages, caches, the load generator's)."""
    return float(statistics.median(rounds["round_seconds"][2:]))


def wire_at(k: int, model: str, runs: int = 7) -> float:
    """Seconds the bare WebSocket stack takes to send K tasks and read K results: the median of `runs`, once warm."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.wire_sink", str(port)], stderr=subprocess.DEVNULL)
    gen = LoadGenerator(f"ws://127.0.0.1:{port}/ws", k, processes_for(k))
    try:
        wait_port(port)
        gen.start()
        gen.wait_joined()
        times = [httpx.get(f"http://127.0.0.1:{port}/round", params={"model": model}, timeout=600).json()["seconds"]
                 for _ in range(runs + 1)]  # fmt: skip
        return float(statistics.median(times[1:]))
    finally:
        gen.stop()
        proc.terminate()
        proc.wait(15)


def idle_clients(workdir: Path, n: int, seconds: float) -> dict[str, float]:
    server = Server(workdir, min_clients=n + 1, max_connections_per_address=0, max_messages_per_second=1000,
                    message_burst=1000)  # fmt: skip
    gen = LoadGenerator(server.url, n, processes_for(n))
    try:
        time.sleep(1)
        before = server.rss()
        gen.start()
        gen.wait_joined(900)
        time.sleep(3)
        per_connection = (server.rss() - before) / n
        latencies: list[float] = []
        with httpx.Client(timeout=10) as http:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t = time.perf_counter()
                http.get(server.http + "/healthz").raise_for_status()
                latencies.append(time.perf_counter() - t)
                time.sleep(max(0.0, 0.05 - (time.perf_counter() - t)))
    finally:
        gen.stop()
        server.stop()
    q = statistics.quantiles(latencies, n=100)
    return {"clients": n, "bytes_per_connection": per_connection, "healthz_p50": q[49], "healthz_p99": q[98],
            "healthz_max": max(latencies), "samples": len(latencies)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="10,100,1000,3000", help="K values for the memory sweep (mnist-cnn)")
    parser.add_argument("--idle", type=int, default=10_000, help="idle clients for the /healthz test")
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--quick", action="store_true", help="K = 10,100; 1,000 idle; 10 s")
    parser.add_argument(
        "--receiving", default="0.5,2", help="the coordinator's --max-receiving-bytes, in models (see above)"
    )
    parser.add_argument("--gateways", type=int, default=0, help="instead: K clients with and without N gateways")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.clients, args.idle, args.idle_seconds = "10,100", 1000, 10
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    workdir = Path(tempfile.mkdtemp(prefix="pollen-scale-"))
    if args.gateways:
        from bench.gateways import sweep

        swept = sweep(workdir, [int(x) for x in args.clients.split(",")], args.gateways, console)
        if args.json:
            args.json.write_text(json.dumps(swept, indent=1))
        return

    budgets = [float(x) for x in args.receiving.split(",")]

    def receiving(model: str, models: float = budgets[0]) -> int:
        return int(models * model_bytes(model))

    out: dict[str, Any] = {"copy_bandwidth": copy_bandwidth()}
    console.print(f"memory copy: {out['copy_bandwidth'] / 1e9:.2f} GB/s")
    out["memory"] = []
    for k in [int(x) for x in args.clients.split(",")]:
        with console.status(f"mnist-cnn, {k} clients: rounds"):
            out["memory"].append(
                {"receiving": budgets[0], **rounds_at(workdir, k, "mnist-cnn", receiving("mnist-cnn"))}
            )
        for models in budgets[1:] if k == 1000 else []:
            with console.status(f"mnist-cnn, {k} clients, receiving {models:g} models: rounds"):
                at = rounds_at(workdir, k, "mnist-cnn", receiving("mnist-cnn", models))
                out["memory"].append({"receiving": models, **at})
    out["overhead"] = []
    for model in ("mnist-mlp", "mnist-cnn"):
        with console.status(f"{model}, 100 clients: wire"):
            wire = wire_at(100, model)
        share: float | None
        for share in (None, budgets[0]):  # the coordinator's default budget, then the memory sweep's
            with console.status(f"{model}, 100 clients, receiving {share or 'default'}: rounds"):
                budget = None if share is None else receiving(model, share)
                rounds = rounds_at(workdir, 100, model, budget, rounds=OVERHEAD_ROUNDS)
            out["overhead"].append({"model": model, "receiving": share, "round": steady_round(rounds), "wire": wire,
                                    **rounds})  # fmt: skip
    with console.status(f"{args.idle} idle clients"):
        out["idle"] = idle_clients(workdir, args.idle, args.idle_seconds)
    report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


def report(out: dict[str, Any]) -> None:
    cnn = model_bytes("mnist-cnn")
    table = Table(title=f"Memory per round, mnist-cnn ({cnn / 1e6:.2f} MB fp32), FedAvg")
    for col in ("K", "receiving (models)", "idle RSS MB", "extra peak MB", "extra ÷ model", "after rounds ÷ model",
                "goal"):  # fmt: skip
        table.add_column(col, justify="right")
    for m in out["memory"]:
        extra = m["peak"] - m["baseline"]
        goal = "≤ 3 at K=1,000" if m["k"] == 1000 else ""
        table.add_row(str(m["k"]), f"{m['receiving']:g}", f"{m['baseline'] / 1e6:.0f}", f"{extra / 1e6:.1f}",
                      f"{extra / cnn:.2f}", f"{(m['after'] - m['baseline']) / cnn:.2f}", goal)  # fmt: skip
    console.print(table)
    table = Table(title="Rounds (round 2 of each run)")
    for col in ("model", "K", "round s", "train phase s", "aggregate GB/s", "÷ copy", "down+up ÷ 2·model"):
        table.add_column(col, justify="right")
    rows = [("mnist-cnn", m) for m in out["memory"]] + [(m["model"], m) for m in out["overhead"]]
    for model, m in rows:
        r = m["round2"]["metrics"]
        agg = r["bytes_in"] / r["aggregate_seconds"] if r.get("aggregate_seconds") else float("nan")
        down_up = (r["bytes_out"] / r["selected"] + r["bytes_in"] / r["replied"]) / (2 * model_bytes(model))
        phase = r.get("train_phase_seconds", float("nan"))
        table.add_row(model, str(m["k"]), f"{m['round2']['seconds']:.2f}", f"{phase:.2f}", f"{agg / 1e9:.2f}",
                      f"{agg / out['copy_bandwidth']:.2f}", f"{down_up:.4f} (fp32)")  # fmt: skip
    console.print(table)
    table = Table(title=f"Round ÷ wire, K = 100 (medians: rounds 3-{OVERHEAD_ROUNDS}, wire runs 2-8)")
    for col in ("model", "receiving (models)", "round s", "wire s", "round ÷ wire", "goal"):
        table.add_column(col, justify="right")
    for m in out["overhead"]:
        budget = "default (256 MiB)" if m["receiving"] is None else f"{m['receiving']:g}"
        table.add_row(m["model"], budget, f"{m['round']:.3f}", f"{m['wire']:.3f}", f"{m['round'] / m['wire']:.2f}",
                      "≤ 1.5")  # fmt: skip
    console.print(table)
    idle = out["idle"]
    console.print(
        f"{idle['clients']:,} idle clients: {idle['bytes_per_connection'] / 1024:.1f} KiB per connection; /healthz "
        f"p50 {idle['healthz_p50'] * 1e3:.1f} ms, p99 {idle['healthz_p99'] * 1e3:.1f} ms, max "
        f"{idle['healthz_max'] * 1e3:.1f} ms over {idle['samples']} requests (goal: p99 ≤ 100 ms at 10,000)"
    )
    console.print("goal: aggregation ≥ 0.5× copy")


if __name__ == "__main__":
    main()
