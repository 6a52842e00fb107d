"""Bad input over real WebSockets: each gets a clear error frame or close, and the run goes on."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from coordinator.client.agent import AgentOptions, run_agent
from coordinator.client.local_data import LocalData
from coordinator.client.worker import TaskWorker
from coordinator.data.mnist import load_split
from coordinator.protocol import Error, Hello, Result, Task, Welcome, encode, encode_tensors
from coordinator.protocol.frame import encode_frame

from .conftest import StartCoordinator
from .wire import next_message

TOKEN = "let-me-in"


async def join(url: str, *, token: str | None = TOKEN, versions: list[int] | None = None):
    ws = await connect(url, max_size=None)
    await ws.send(encode(Hello(versions or [1], token, None, "python", 1 << 24)))
    return ws


@pytest.fixture
def waiting(start_coordinator: StartCoordinator):
    """A coordinator that waits for more clients than will come, so nothing but our frames happens."""
    coordinator, server = start_coordinator(join_token=TOKEN, min_clients=50, max_frame_bytes=1 << 20)
    return coordinator, server


async def test_wrong_token_is_refused_and_closed(waiting) -> None:
    ws = await join(waiting[1].url, token="nope")
    error = await next_message(ws, Error)
    assert isinstance(error, Error) and error.code == "unauthorized" and error.fatal
    with pytest.raises(ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008


async def test_wrong_protocol_version_is_refused(waiting) -> None:
    ws = await join(waiting[1].url, versions=[99])
    error = await next_message(ws, Error)
    assert isinstance(error, Error) and error.code == "unsupported_version" and "[99]" in error.message
    with pytest.raises(ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1002


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (encode_frame({"type": "heartbeat", "seq": 1})[:-3], "truncated"),
        (encode_frame({"type": "gossip"}), "unknown_type"),
        (encode(Result("never-sent", 10, {}, b"")), "unknown_task"),
        (encode(Result("x", 1, {}, b"\0" * (2 << 20))), "frame_too_large"),
    ],
)
async def test_bad_frames_after_joining_get_an_error_and_the_connection_survives(waiting, frame, code) -> None:
    coordinator, server = waiting
    ws = await join(server.url)
    assert isinstance(await next_message(ws, Welcome), Welcome)
    await ws.send(frame)
    error = await next_message(ws, Error)
    assert isinstance(error, Error) and error.code == code and not error.fatal
    await ws.send(encode_frame({"type": "heartbeat", "seq": 2}))  # still open
    assert coordinator.clients.count() == 1
    async with httpx.AsyncClient() as http:
        health = await http.get(server.url.replace("ws://", "http://").replace("/ws", "/healthz"))
    assert health.text == "ok"
    await ws.close()


async def test_text_frames_are_refused(waiting) -> None:
    ws = await join(waiting[1].url)
    await next_message(ws, Welcome)
    await ws.send("hello?")
    error = await next_message(ws, Error)
    assert isinstance(error, Error) and error.code == "invalid_message"


def _honest_agent(url: str) -> asyncio.Task[int]:
    train = load_split("train")
    worker = TaskWorker(LocalData(train.x[:800], train.y[:800]))
    return asyncio.create_task(run_agent(AgentOptions(url, TOKEN, give_up_after=30), worker))


@pytest.mark.parametrize("attack", ["wrong-shape", "nan", "wrong-names", "not-safetensors", "zero-examples"])
async def test_bad_update_is_rejected_and_the_round_completes_with_the_others(start_coordinator, attack) -> None:
    coordinator, server = start_coordinator(join_token=TOKEN, min_clients=2, rounds=2, local_epochs=2, round_timeout=60)
    honest = _honest_agent(server.url)
    ws = await join(server.url)
    await next_message(ws, Welcome)
    rejected = []
    for _ in range(2):
        task = await next_message(ws, Task)
        assert isinstance(task, Task)
        shapes = {k: tuple(v) for k, v in coordinator.run_loop.spec.wire_shapes().items()}
        delta = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
        num_examples = 10
        if attack == "wrong-shape":
            delta["layers.1.weight"] = np.zeros((3, 3), np.float32)
        elif attack == "nan":
            delta["layers.3.bias"][0] = np.nan
        elif attack == "wrong-names":
            delta["sneaky"] = delta.pop("layers.3.bias")
        elif attack == "zero-examples":
            num_examples = 10**12
        payload = b"garbage" if attack == "not-safetensors" else encode_tensors(delta)
        await ws.send(encode(Result(task.task_id, num_examples, {}, payload)))
        error = await next_message(ws, Error)
        assert isinstance(error, Error) and error.code == "invalid_update" and error.reply_to == task.task_id
        rejected.append(error.message)
    assert await asyncio.wait_for(honest, 120) == 0
    history = coordinator.status.snapshot()["rounds"]
    assert [(r["clients"], r["failures"]) for r in history] == [(1, 1), (1, 1)]
    assert coordinator.status.state == "completed"
    assert all(r["accuracy"] > 0.5 for r in history)


async def test_metrics_count_traffic_and_rejections(waiting) -> None:
    server = waiting[1]
    ws = await join(server.url)
    await next_message(ws, Welcome)
    await ws.send(encode_frame({"type": "gossip"}))
    await next_message(ws, Error)
    async with httpx.AsyncClient() as http:
        text = (await http.get(server.url.replace("ws://", "http://").replace("/ws", "/metrics"))).text
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"}
    assert samples["pollen_clients_connected"] == 1
    assert samples['pollen_rejected_frames_total{code="unknown_type"}'] == 1
    assert samples["pollen_bytes_received_total"] > 0 and samples["pollen_bytes_sent_total"] > 0
    assert samples["pollen_rounds_completed_total"] == 0
    await ws.close()


async def test_admin_api_refuses_requests_without_the_token(start_coordinator: StartCoordinator) -> None:
    coordinator, server = start_coordinator(admin_token="s3cret", min_clients=50)
    base = server.url.replace("ws://", "http://").removesuffix("/ws")
    async with httpx.AsyncClient(base_url=base) as http:
        for method, path in [("GET", "/api/admin/runs"), ("POST", "/api/admin/pause"), ("POST", "/api/admin/stop")]:
            assert (await http.request(method, path)).status_code == 401
            bad = await http.request(method, path, headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        runs = (await http.get("/api/admin/runs", headers=auth)).json()
        assert [r["id"] for r in runs] == [coordinator.run_loop.run.id]
        assert (await http.post("/api/admin/pause", headers=auth)).json()["paused"] is True
        assert (await http.post("/api/admin/resume", headers=auth)).json()["paused"] is False
        assert (await http.post("/api/admin/runs", headers=auth, json={"rounds": 3})).status_code == 409
        assert (await http.post("/api/admin/stop", headers=auth)).json()["stopping"] is True
        await asyncio.to_thread(coordinator.status.finished.wait, 10)
        assert coordinator.store.get_run().state == "stopped"
        created = await http.post("/api/admin/runs", headers=auth, json={"rounds": 3, "model": "mnist-2nn"})
        assert created.status_code == 201
        assert (await http.get("/api/status")).json()["model"] == "mnist-2nn"
        assert len((await http.get("/api/admin/runs", headers=auth)).json()) == 2
        assert (await http.post("/api/admin/runs", headers=auth, json={"port": 1})).status_code == 400
        coordinator.run_loop.control.stop()


async def test_admin_api_is_off_without_an_admin_token(waiting) -> None:
    base = waiting[1].url.replace("ws://", "http://").removesuffix("/ws")
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/api/admin/runs", headers={"Authorization": "Bearer x"})).status_code == 403
