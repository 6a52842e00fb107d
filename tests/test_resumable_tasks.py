"""A client that keeps its jobs across reconnects (a reloaded page) finishes its task on a new connection (SPEC §4.2).

The grid against fake nodes first (held, resumed, expired, unclaimed, someone else's), then the
same over real WebSockets: at the coordinator, and at a gateway (its body in this process, no Ray).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from flwr.common.constant import ErrorCode as FlowerErrorCode
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect

from coordinator.cluster.gateway import Gateway, RunView
from coordinator.federation.aggregation import CLIENTS_KEY, WEIGHT_KEY
from coordinator.federation.grid import NodeGrid
from coordinator.federation.open_phases import OpenPhases
from coordinator.federation.phase import Phase
from coordinator.federation.phases import PhaseReport
from coordinator.persistence.store import Registration
from coordinator.protocol import Error, Hello, Result, Task, Welcome, encode, encode_tensors
from coordinator.protocol.close_codes import Close
from coordinator.protocol.endpoints import ClientProtocol, HelloReceived, ServerProtocol, TaskReceived, Welcomed
from coordinator.settings import Settings

from .conftest import StartCoordinator, wait_for
from .fake_nodes import Answer, FakeNodes
from .test_gateway_phases import NODE, _events, _task
from .test_grid import SPEC, good, task_identity, train_messages, weights
from .wire import close_code, next_message, read_message

__all__ = ["task_identity"]  # the grid's tests' fixture, used here too

TOKEN = "let-me-in"


class KeepingNodes(FakeNodes):
    """Fake nodes some of whose clients keep their jobs across reconnects (`AwayNodes`)."""

    def __init__(self, ids: list[int], answer: Answer) -> None:
        super().__init__(ids, answer)
        self.away_listeners: list[Callable[[int], None]] = []

    def on_away(self, listener: Callable[[int], None]) -> None:
        self.away_listeners.append(listener)

    def off_away(self, listener: Callable[[int], None]) -> None:
        self.away_listeners.remove(listener)

    def leave(self, node_id: int, *, keeps_jobs: bool) -> None:
        """The node's connection ends: as `ClientRegistry` tells it, away first if its client keeps its jobs."""
        for listener in list(self.away_listeners if keeps_jobs else []) + list(self.listeners):
            listener(node_id)

    def task_of(self, node_id: int) -> Task:
        return next(task for n, task, _ in self.sent if n == node_id)


def make(grace: float, silent: set[int], **kwargs: object) -> tuple[NodeGrid, KeepingNodes, list[PhaseReport]]:
    reports: list[PhaseReport] = []
    nodes = KeepingNodes([1, 2, 3], lambda n, t: None if n in silent else good(n, t))
    grid = NodeGrid(nodes, SPEC, "run-1", on_phase=reports.append, resume_grace=grace, **kwargs)  # type: ignore[arg-type]
    nodes.grid = grid
    return grid, nodes, reports


def at(seconds: float, action: Callable[[], object]) -> None:
    threading.Timer(seconds, action).start()


def test_a_node_back_within_the_grace_has_its_reply_folded() -> None:
    grid, nodes, reports = make(60, {2}, streaming=True)
    claims: list[list[str]] = []

    def come_back() -> None:
        task = nodes.task_of(2)
        claims.append(grid.resume(2, ["never-sent", task.task_id, task.task_id]))
        assert grid.deliver(2, good(2, task))

    at(0.1, lambda: nodes.leave(2, keeps_jobs=True))
    at(0.5, come_back)
    began = time.monotonic()
    (folded,) = grid.send_and_receive(train_messages(grid, weights(), [1, 2, 3]), timeout=30)
    assert time.monotonic() - began < 5
    assert claims == [[nodes.task_of(2).task_id]]  # the unknown id and the repeat are not resumed
    assert folded.content["metrics"][CLIENTS_KEY] == 3 and folded.content["metrics"][WEIGHT_KEY] == 10 + 20 + 30
    (report,) = reports
    assert (report.ok, report.resumed, report.failures) == (3, 1, [])


def test_a_node_not_back_within_the_grace_fails_then_and_the_phase_does_not_wait_for_its_deadline() -> None:
    grid, nodes, reports = make(0.5, {2, 3})
    at(0.1, lambda: nodes.leave(2, keeps_jobs=True))
    at(0.1, lambda: nodes.leave(3, keeps_jobs=False))  # its client keeps no jobs: it fails at once, as ever
    began = time.monotonic()
    replies = list(grid.send_and_receive(train_messages(grid, weights(), [1, 2, 3]), timeout=30))
    assert time.monotonic() - began < 3
    assert reports[0].failures == ["node 3: client disconnected", "node 2: did not come back within 0.5 s"]
    assert sorted(r.error.code for r in replies if r.has_error()) == [FlowerErrorCode.NODE_UNAVAILABLE] * 2
    assert grid.resume(2, [nodes.task_of(2).task_id]) == [] and not grid.deliver(2, good(2, nodes.task_of(2)))


def test_a_grace_of_0_holds_nothing_and_the_deadline_bounds_any_grace() -> None:
    grid, nodes, reports = make(0, {2})
    at(0.1, lambda: nodes.leave(2, keeps_jobs=True))
    grid.send_and_receive(train_messages(grid, weights(), [1, 2, 3]), timeout=30)
    assert reports[0].failures == ["node 2: client disconnected"]

    grid, nodes, reports = make(60, {2})
    at(0.1, lambda: nodes.leave(2, keeps_jobs=True))
    began = time.monotonic()
    grid.send_and_receive(train_messages(grid, weights(), [1, 2, 3]), timeout=0.6)
    assert time.monotonic() - began < 3
    assert (reports[0].late, reports[0].failures) == (1, ["node 2: no reply within 0.6 s"])


def test_only_a_nodes_own_open_tasks_are_resumed_and_those_it_does_not_claim_fail() -> None:
    grid, nodes, reports = make(60, {2, 3})
    claims: dict[str, list[str]] = {}

    def come_back() -> None:
        task_id = nodes.task_of(2).task_id  # the phase's: each node of a phase has its own task of that id
        claims["answered already"] = grid.resume(1, [task_id])
        claims["not in the phase"] = grid.resume(9, [task_id])
        claims["owner"] = grid.resume(2, [task_id])
        claims["back without it"] = grid.resume(3, [])  # node 3's held task fails now, not at the grace

    at(0.1, lambda: nodes.leave(2, keeps_jobs=True))
    at(0.1, lambda: nodes.leave(3, keeps_jobs=True))
    at(0.4, come_back)
    at(0.6, lambda: grid.deliver(2, good(2, nodes.task_of(2))))
    began = time.monotonic()
    grid.send_and_receive(train_messages(grid, weights(), [1, 2, 3]), timeout=30)
    assert time.monotonic() - began < 5
    assert claims == {
        "answered already": [],
        "not in the phase": [],
        "owner": [nodes.task_of(2).task_id],
        "back without it": [],
    }
    (report,) = reports
    assert (report.ok, report.resumed, report.failures) == (2, 1, ["node 3: came back without this task"])


def test_a_welcome_puts_its_resumed_tasks_in_flight_on_the_new_connection() -> None:
    server = ServerProtocol(join_token=None)
    (event,) = server.receive(encode(Hello([1], None, "c", "python", 1 << 20, resumable=True, resume=["t1", "t2"])))
    assert isinstance(event, HelloReceived) and event.hello.resumable and event.hello.resume == ["t1", "t2"]
    server.accept(Welcome(1, "c", 1, "r", 1 << 20, 10, resumed=["t1"]))
    assert server.in_flight == {"t1"}
    assert server.receive(encode(Result("t1", 5, {}))) != []
    assert server.receive(encode(Result("t2", 5, {}))) == []  # void: refused as unknown_task
    assert [m for m in server.data_to_send() if b"unknown_task" in m]


def test_resume_grace_is_a_setting_0_or_more() -> None:
    from coordinator.cli import app

    for command in ("serve", "simulate"):
        assert "--resume-grace" in CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    assert Settings().resume_grace == 60 and Settings(resume_grace=0).resume_grace == 0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="resume-grace"):
            Settings(resume_grace=bad)


# Over WebSockets ----------------------------------------------------------------------------------------------------
async def hello(url: str, client_id: str | None = None, secret: str | None = None, resume: list[str] | None = None):
    ws = await connect(url, max_size=None)
    await ws.send(encode(Hello([1], TOKEN, client_id, "python", 1 << 24, "test", secret, None, True, resume)))
    welcome = await next_message(ws, Welcome)
    assert isinstance(welcome, Welcome)
    return ws, welcome


def zero_delta(coordinator) -> bytes:
    return encode_tensors({k: np.zeros(s, np.float32) for k, s in coordinator.run_loop.spec.wire_shapes().items()})


async def leave_with_a_task(coordinator, url: str) -> tuple[Welcome, Task]:
    ws, first = await hello(url)
    task = await next_message(ws, Task)
    assert isinstance(task, Task) and task.kind == "train"
    await ws.close()  # the page is reloaded mid-training
    await asyncio.to_thread(wait_for, lambda: coordinator.clients.count() == 0, 10, "the coordinator to notice")
    return first, task


async def test_a_reloaded_client_finishes_its_task_on_its_new_connection(start_coordinator: StartCoordinator) -> None:
    coordinator, server = start_coordinator(join_token=TOKEN, min_clients=1, rounds=1, evaluate_every=0)
    first, task = await leave_with_a_task(coordinator, server.url)
    # Someone who knows the client id but not the secret gets a fresh node, and nothing of the task.
    impostor, other = await hello(server.url, first.client_id, "x" * 43, [task.task_id])
    assert other.node_id != first.node_id and other.resumed == []
    await impostor.close()
    ws, again = await hello(server.url, first.client_id, first.secret, [task.task_id, "never-sent"])
    assert again.node_id == first.node_id and again.resumed == [task.task_id]
    await ws.send(encode(Result(task.task_id, 10, {"train_loss": 0.5}, zero_delta(coordinator))))
    assert await close_code(ws) == Close.RUN_COMPLETE  # the round took the reply and the run is over
    (round_1,) = coordinator.status.snapshot()["rounds"]
    assert (round_1["clients"], round_1["failures"], round_1["metrics"]["resumed"]) == (1, 0, 1)


async def test_a_client_back_after_the_grace_resumes_nothing(start_coordinator: StartCoordinator) -> None:
    coordinator, server = start_coordinator(join_token=TOKEN, min_clients=1, rounds=2, evaluate_every=0, resume_grace=1)
    first, task = await leave_with_a_task(coordinator, server.url)

    def rounds() -> list[dict[str, Any]]:
        return list(coordinator.status.snapshot()["rounds"])

    await asyncio.to_thread(wait_for, lambda: len(rounds()) == 1, 10, "round 1 to end without the client")
    assert rounds()[0]["metrics"]["failures"] == [f"node {first.node_id}: did not come back within 1 s"]
    ws, again = await hello(server.url, first.client_id, first.secret, [task.task_id])
    assert again.resumed == []  # void: the client discards that job
    await ws.send(encode(Result(task.task_id, 10, {}, zero_delta(coordinator))))
    got: dict[type, object] = {}
    while len(got) < 2:  # the refusal, and round 2's task (in either order): the client goes on as any other
        message = await read_message(ws)
        if isinstance(message, Error | Task):
            got[type(message)] = message
    refused, nxt = got[Error], got[Task]
    assert isinstance(refused, Error) and refused.code == "unknown_task" and task.task_id in refused.message
    assert isinstance(nxt, Task) and nxt.task_id != task.task_id
    await ws.send(encode(Result(nxt.task_id, 10, {}, zero_delta(coordinator))))
    assert await close_code(ws) == Close.RUN_COMPLETE
    assert [(r["clients"], r["failures"]) for r in rounds()] == [(0, 1), (1, 0)]


async def test_a_gateway_holds_a_resumable_clients_task_and_takes_its_reply_on_the_new_connection() -> None:
    gateway = Gateway(0, Settings(db="sqlite://", port=0, model="mnist-2nn").to_dict(), "127.0.0.1", 0)
    await gateway.configure(RunView(run_id="run-1"))
    url = await gateway.url()

    async def join(registration: Registration, **hello: object) -> tuple[ClientConnection, ClientProtocol, Welcome]:
        ws, conn = await connect(url, max_size=None, ping_interval=None), ClientProtocol()
        conn.hello(token=None, backend="test", resumable=True, **hello)  # type: ignore[arg-type]
        for frame in conn.data_to_send():
            await ws.send(frame)
        (request,) = (await gateway.events(wait=10)).joins
        await gateway.admit({request.ticket: registration})  # the coordinator's part: it checked the secret
        (welcomed,) = [e for e in await _events(ws, conn) if isinstance(e, Welcomed)]
        return ws, conn, welcomed.welcome

    ws, conn, _ = await join(Registration(NODE, "client-7", "s" * 32), client_id=None)
    try:
        task, weights = _task(timeout=30)
        phase = asyncio.create_task(gateway.run_phase(replace(task, resume_grace=30), weights))
        while not any(isinstance(e, TaskReceived) for e in await _events(ws, conn)):
            pass  # the task comes in chunks
        await ws.close()
        await asyncio.to_thread(wait_for, lambda: gateway.clients.count() == 0, 10, "the gateway to notice")
        await asyncio.sleep(0.2)
        assert not phase.done()  # held for the node's return
        ws, conn, welcome = await join(
            Registration(NODE, "client-7", None), client_id="client-7", secret="s" * 32, resume=[task.task_id]
        )
        assert welcome.resumed == [task.task_id]
        delta = encode_tensors({k: np.ones(s, np.float32) for k, s in task.shapes.items()})
        conn.send(Result(task.task_id, 10, {}, delta))
        for frame in conn.data_to_send():
            await ws.send(frame)
        partial = await asyncio.wait_for(phase, 10)
        assert partial.count == 1 and partial.weight == 10.0
        assert partial.report is not None and (partial.report.ok, partial.report.resumed) == (1, 1)
    finally:
        await ws.close()
        await gateway.close_all(going_away=True)
        gateway._server.should_exit = True
        await asyncio.wait_for(gateway._serving, 10)


OWN, OTHERS = ["mine-1", "mine-2"], ["theirs-1"]


@settings(max_examples=200, deadline=None, derandomize=os.environ.get("CI") == "true", database=None)
@given(
    claims=st.lists(st.sampled_from(OWN + OTHERS) | st.text(max_size=140), max_size=40),
    away=st.booleans(),
)
def test_whatever_a_client_claims_it_resumes_only_its_own_open_tasks_at_most_eight(
    claims: list[str], away: bool
) -> None:
    """A hostile hello.resume (repeats, other nodes' tasks, made-up or overlong ids, more than 8) resumes
    exactly the node's own open tasks it names among its first 8 distinct claims, in their order."""
    open_phases = OpenPhases()
    task, weights = _task(timeout=600)
    for task_id, nodes in [("mine-1", (NODE,)), ("mine-2", (NODE, 8)), ("theirs-1", (8,))]:
        shard = replace(task, task_id=task_id, nodes=nodes, resume_grace=60)
        open_phases.phases[task_id] = Phase.for_shard(shard, weights, lambda node_id, error: None)
    if away:
        open_phases.away(NODE)
    resumed = open_phases.resume(NODE, claims)
    first = list(dict.fromkeys(claims))[:8]
    assert resumed == [t for t in first if t in OWN]
    assert all(not p.is_away(NODE) for p in open_phases.phases.values())  # unclaimed held tasks failed
