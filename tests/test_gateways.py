"""Gateways on a local Ray instance: clients spread by `/api/join`, and FedAvg through them equals FedAvg without.

Each test client answers every train task with a delta fixed by its own index and the
round, so a run's model depends only on which clients answered: the same six clients give
the same model through three gateways as through the coordinator's own `/ws`.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK

from coordinator.cli import gateway_pool
from coordinator.client.agent import AgentOptions, run_agent
from coordinator.client.local_data import LocalData
from coordinator.client.worker import TaskWorker
from coordinator.cluster.pool import NAMESPACE
from coordinator.data.mnist import load_split
from coordinator.models.spec import load_spec
from coordinator.protocol import Result, decode_tensors, encode_tensors
from coordinator.protocol.close_codes import Close
from coordinator.protocol.endpoints import ClientProtocol, TaskReceived
from coordinator.server.app import Coordinator
from coordinator.serving import BackgroundServer
from coordinator.settings import Settings
from tests.conftest import free_port, wait_for
from tests.test_resume import CLIENTS as RESUME_CLIENTS
from tests.test_resume import ROUNDS, kill_and_resume
from tests.wire import close_code

MODEL = "mnist-2nn"
SHAPES = load_spec(MODEL).wire_shapes()
CLIENTS = 6


def delta(index: int, round_number: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([index, round_number])
    return {n: (rng.standard_normal(s) * 0.01).astype(np.float32) for n, s in SHAPES.items()}


async def client(url: str, index: int, stop: asyncio.Event) -> str:
    """Join at `url`, answer train tasks until `stop`; returns the host:port it was served by."""
    ws: ClientConnection = await connect(url, max_size=None, ping_interval=None)
    conn = ClientProtocol()
    conn.hello(token=None, client_id=None, backend="test", agent=f"client-{index}")
    for frame in conn.data_to_send():
        await ws.send(frame)
    try:
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(ws.recv(decode=False), 0.5)
            except TimeoutError:
                continue
            except ConnectionClosedOK:  # the run is complete
                break
            for event in conn.receive(data):
                if not isinstance(event, TaskReceived) or event.task.kind != "train":
                    continue
                message = event.task
                reply = Result(
                    message.task_id, 10 + index, {"train_loss": 1.0}, encode_tensors(delta(index, message.round))
                )
                conn.send(reply)
            for frame in conn.data_to_send():
                await ws.send(frame)
    finally:
        await ws.close()
    return url


async def _garbage_is_refused(url: str) -> None:
    ws = await connect(url, max_size=None, ping_interval=None)
    await ws.send(b"\x00not a pollen frame" * 100)
    assert await close_code(ws) == Close.PROTOCOL_ERROR


def run(tmp_path: Path, name: str, gateways: int) -> tuple[dict[str, np.ndarray], Counter[str]]:
    """A two-round FedAvg run of the six clients; the final model and how many clients each URL served."""
    settings = Settings(
        db=f"sqlite:///{tmp_path}/{name}.db",
        port=0,
        model=MODEL,
        rounds=2,
        min_clients=CLIENTS,
        wait_for=CLIENTS,
        overselect=1.0,
        evaluate_every=0,
        round_timeout=60,
        gateways=gateways,
        gateway_port=free_port() if gateways else 0,
        new_run=True,
    )
    coordinator = Coordinator(settings, gateway_pool(settings))
    server = BackgroundServer(coordinator)
    server.start(timeout=120)
    http = f"http://127.0.0.1:{server.port}"
    try:
        if gateways:  # a hostile peer at a gateway: refused as on /ws, and the gateway serves on
            asyncio.run(_garbage_is_refused(httpx.get(f"{http}/api/join", timeout=10).json()["url"]))
        urls = [httpx.get(f"{http}/api/join", timeout=10).json()["url"] for _ in range(CLIENTS)]
        served = Counter(urls)

        async def federate() -> None:
            stop = asyncio.Event()
            tasks = [asyncio.create_task(client(url, i, stop)) for i, url in enumerate(urls)]
            await asyncio.to_thread(wait_for, lambda: coordinator.status.finished.is_set(), 120, "the run to end")
            stop.set()
            await asyncio.gather(*tasks)

        asyncio.run(federate())
        assert coordinator.status.state == "completed", coordinator.status.message
        _, weights = coordinator.store.checkpoint(coordinator.run_loop.run.id)
        if gateways:
            listed = httpx.get(f"{http}/api/status", timeout=10).json()["gateways"]
            assert [g["id"] for g in listed] == list(range(gateways)) and all(g["alive"] for g in listed)
            assert all(g["last_phase_bytes"] > 0 and g["address"] in served for g in listed), listed
            scraped = httpx.get(f"{http}/metrics", timeout=10).text
            assert all(f'pollen_gateway_alive{{gateway="{i}"}} 1.0' in scraped for i in range(gateways))
        return decode_tensors(weights), served
    finally:
        server.stop()
        coordinator.store.close()


@pytest.mark.slow
def test_fedavg_through_three_gateways_equals_fedavg_without_them(tmp_path: Path) -> None:
    direct, served_direct = run(tmp_path, "direct", gateways=0)
    through, served = run(tmp_path, "gateways", gateways=3)
    assert len(served_direct) == 1 and next(iter(served_direct)).endswith("/ws")
    assert len(served) == 3 and all(v == 2 for v in served.values()), served  # the least-loaded, each time
    assert max(float(np.abs(direct[k] - through[k]).max()) for k in direct) < 1e-6


@pytest.mark.slow
async def test_a_gateway_killed_mid_round_fails_its_clients_who_come_back_through_join(tmp_path: Path) -> None:
    """kill -9 of a gateway while its clients train: the round ends with their failures, they reconnect
    through /api/join (with backoff, resuming their nodes), Ray restarts the gateway, and the run ends well."""
    settings = Settings(
        db=f"sqlite:///{tmp_path}/kill.db",
        port=0,
        model="mnist-mlp",
        rounds=3,
        min_clients=4,
        wait_for=CLIENTS,
        overselect=1.0,
        local_epochs=3,
        round_timeout=60,
        gateways=3,
        gateway_port=free_port(),
        new_run=True,
    )
    coordinator = Coordinator(settings, gateway_pool(settings))
    server = BackgroundServer(coordinator)
    server.start(timeout=120)
    http = f"http://127.0.0.1:{server.port}"
    train = load_split("train")
    agents = [
        asyncio.create_task(
            run_agent(
                AgentOptions(http, heartbeat_seconds=0.5, max_backoff=0.5, give_up_after=60),
                TaskWorker(LocalData(train.x[i * 800 : (i + 1) * 800], train.y[i * 800 : (i + 1) * 800])),
            )
        )
        for i in range(CLIENTS)
    ]
    try:
        await asyncio.to_thread(wait_for, lambda: coordinator.status.state == "running", 60, "round 1")
        import ray  # after the pool imported it, with its settings (tests/test_gateways.py runs no Ray of its own)

        gateway = ray.get_actor("gateway-0", namespace=NAMESPACE)
        pid: int = await asyncio.to_thread(ray.get, gateway.pid.remote())
        nodes_before = set(coordinator.nodes.node_ids())
        os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(wait_for, lambda: coordinator.status.finished.is_set(), 180, "the run to end")
        assert coordinator.status.state == "completed", coordinator.status.message
        history = coordinator.store.rounds(coordinator.run_loop.run.id)
        assert sum(r.failures for r in history) >= 1, history
        assert history[-1].accuracy is not None and history[-1].accuracy > 0.85
        assert set(coordinator.nodes.node_ids()) <= nodes_before  # back as themselves: no new nodes
        pool = coordinator.gateways
        assert pool is not None
        await asyncio.to_thread(wait_for, lambda: all(g["alive"] for g in pool.describe()), 60, "Ray's restart")
        assert await asyncio.gather(*agents) == [0] * CLIENTS
    finally:
        for agent in agents:
            agent.cancel()
        server.stop()
        coordinator.store.close()


@pytest.mark.slow
def test_kill9_of_the_coordinator_under_its_gateways_resumes_the_run_with_the_same_clients(tmp_path: Path) -> None:
    """kill -9 of `pollen serve --gateways 2` takes its local Ray and gateways with it; restarted on the same
    ports and database, it starts new gateways, the clients come back through /api/join as their own nodes,
    and the run resumes (tests/test_resume.py's checks: every round once, nothing lost, the model learns)."""
    db = f"sqlite:///{tmp_path}/pollen.db"
    serve = ["serve", "--db", db, "--rounds", str(ROUNDS), "--min-clients", str(RESUME_CLIENTS)]
    serve += ["--local-epochs", "1", "--heartbeat-seconds", "2", "--join-token", "tok"]
    serve += ["--gateways", "2", "--gateway-port", str(free_port())]
    kill_and_resume(db, tmp_path, serve=serve, follow_join=True)
    engine = create_engine(db)
    with engine.connect() as c:
        assert c.execute(text("select count(*) from clients")).scalar() == RESUME_CLIENTS  # no new nodes
    engine.dispose()
