"""A gateway's phases without Ray: the actor's body in this process, a client on its socket, the test as coordinator.

On a cluster a gateway outlives a coordinator killed mid-round (it is detached), and its
phase goes on waiting for replies no one will read. The coordinator that attaches next ends
it (`Gateway.end_phases`): the clients' tasks end, and the gateway is free for the new run.
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from coordinator.cluster.gateway import Gateway, RunView
from coordinator.federation.replies import ReplyLimits
from coordinator.federation.shards import ShardTask
from coordinator.models.spec import load_spec
from coordinator.persistence.store import Registration
from coordinator.protocol import Task
from coordinator.protocol.endpoints import ClientProtocol, PeerError, TaskReceived, Welcomed
from coordinator.protocol.frame import encode_frame
from coordinator.settings import Settings

MODEL = "mnist-2nn"
NODE = 7


async def _events(ws: ClientConnection, conn: ClientProtocol) -> list[object]:
    data = await asyncio.wait_for(ws.recv(decode=False), 10)
    events: list[object] = list(conn.receive(data))
    for frame in conn.data_to_send():
        await ws.send(frame)
    return events


async def _joined(gateway: Gateway, url: str) -> tuple[ClientConnection, ClientProtocol]:
    """A client that says hello at the gateway, registered as node `NODE` by the test (the coordinator's part)."""
    ws = await connect(url, max_size=None, ping_interval=None)
    conn = ClientProtocol()
    conn.hello(token=None, client_id=None, backend="test", agent="silent")
    for frame in conn.data_to_send():
        await ws.send(frame)
    events = await gateway.events(wait=10)
    (join,) = events.joins
    await gateway.admit({join.ticket: Registration(NODE, "client-7", "s" * 32)})
    got = await _events(ws, conn)
    assert any(isinstance(e, Welcomed) for e in got), got
    return ws, conn


def _task(timeout: float) -> tuple[ShardTask, dict[str, np.ndarray]]:
    spec = load_spec(MODEL)
    shapes = spec.wire_shapes()
    weights = {n: np.zeros(int(np.prod(s)), np.float32) for n, s in shapes.items()}
    header = Task("train", uuid.uuid4().hex, "run-1", 3, spec.raw, {}).header()
    task = ShardTask(header["task_id"], "train", 3, encode_frame(header), (NODE,), None, timeout, True,
                     dict(shapes), ReplyLimits(), False, "fp32")  # fmt: skip
    return task, weights


async def test_a_phase_left_by_a_dead_coordinator_is_ended_when_the_next_one_attaches() -> None:
    settings = Settings(db="sqlite://", port=0, model=MODEL, host="127.0.0.1", heartbeat_seconds=30)
    gateway = Gateway(0, settings.to_dict(), "127.0.0.1", 0)
    await gateway.configure(RunView(run_id="run-1"))  # the run the (dead) coordinator was running
    ws, conn = await _joined(gateway, await gateway.url())
    try:
        assert await gateway.end_phases() == 0  # nothing under way
        task, weights = _task(timeout=600)
        phase = asyncio.create_task(gateway.run_phase(task, weights))
        received: list[object] = []
        while not received:  # the task comes in chunks
            received = await _events(ws, conn)
        assert any(isinstance(e, TaskReceived) and e.task.task_id == task.task_id for e in received), received
        await asyncio.sleep(0.2)
        assert not phase.done()  # the client never answers, and its coordinator is gone

        assert await gateway.end_phases() == 1  # the next coordinator attaches
        partial = await asyncio.wait_for(phase, 10)
        assert partial.task_id == task.task_id and partial.count == 0 and partial.weight == 0.0
        assert partial.report is not None and partial.report.ok == 0 and partial.report.dropped == 1
        (told,) = await _events(ws, conn)  # the client learns its task is over: it may take the next run's
        assert isinstance(told, PeerError) and told.error.code == "task_cancelled", told
        assert told.error.reply_to == task.task_id
        assert await gateway.end_phases() == 0  # ended phases are not kept
    finally:
        await ws.close()
        await gateway.close_all(going_away=True)
        gateway._server.should_exit = True  # Ray kills an actor; here its server is stopped by hand
        await asyncio.wait_for(gateway._serving, 10)
