"""Identity is a credential: a node is resumed with its secret, never taken over by its id; close codes say why."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from coordinator.client.agent import AgentOptions, run_agent
from coordinator.client.local_data import LocalData
from coordinator.client.worker import TaskWorker
from coordinator.data.mnist import load_split
from coordinator.protocol import Error, Heartbeat, Hello, Welcome, decode, encode
from coordinator.protocol.close_codes import Close
from coordinator.server.websocket import RegistrationUnavailable

from .conftest import StartCoordinator, wait_for
from .wire import close_code, next_message

TOKEN = "let-me-in"


async def hello(url: str, client_id: str | None = None, secret: str | None = None):
    ws = await connect(url, max_size=None)
    await ws.send(encode(Hello([1], TOKEN, client_id, "python", 1 << 24, "test", secret)))
    return ws


async def welcome(ws) -> Welcome:
    got = await next_message(ws, Welcome)
    assert isinstance(got, Welcome)
    return got


async def test_a_node_is_resumed_with_its_secret_and_never_without(start_coordinator: StartCoordinator) -> None:
    _, server = start_coordinator(join_token=TOKEN, min_clients=50)
    ws = await hello(server.url)
    first = await welcome(ws)
    assert first.secret is not None and len(first.secret) >= 43
    await ws.close()
    ws = await hello(server.url, first.client_id, first.secret)
    again = await welcome(ws)
    assert (again.node_id, again.client_id, again.secret) == (first.node_id, first.client_id, None)
    await ws.close()
    for secret in (None, "guessed" * 5):
        ws = await hello(server.url, first.client_id, secret)
        other = await welcome(ws)
        assert other.node_id != first.node_id and other.client_id != first.client_id and other.secret
        await ws.close()


async def test_a_newer_connection_with_the_secret_replaces_the_old_with_4001(start_coordinator: StartCoordinator):
    coordinator, server = start_coordinator(join_token=TOKEN, min_clients=50)
    old = await hello(server.url)
    first = await welcome(old)
    new = await hello(server.url, first.client_id, first.secret)
    assert (await welcome(new)).node_id == first.node_id
    assert await close_code(old) == Close.REPLACED
    assert coordinator.clients.node_ids() == [first.node_id]
    await new.close()


def _agent(url: str, examples: int = 600) -> asyncio.Task[int]:
    train = load_split("train")
    worker = TaskWorker(LocalData(train.x[:examples], train.y[:examples]))
    options = AgentOptions(url, TOKEN, heartbeat_seconds=0.5, max_backoff=0.5, give_up_after=30)
    return asyncio.create_task(run_agent(options, worker))


async def test_an_outsider_who_knows_every_id_cannot_take_a_node(start_coordinator: StartCoordinator) -> None:
    coordinator, server = start_coordinator(join_token=TOKEN, min_clients=1, rounds=3, local_epochs=1)
    victim = _agent(server.url)
    await asyncio.to_thread(wait_for, lambda: coordinator.clients.count() == 1, 30, "the victim to join")
    base = server.url.replace("ws://", "http://").removesuffix("/ws")
    async with httpx.AsyncClient(base_url=base) as http:
        public = (await http.get("/api/status")).text
    [seen] = coordinator.clients.describe()  # more than the public status shows: the operator's view
    lost: list[tuple[int, bool]] = []  # (node id, was the run over?) each time a connection went
    coordinator.clients.on_lost(lambda node: lost.append((node, coordinator.status.finished.is_set())))
    assert seen["client_id"] not in public and seen["address"].split(":")[1] not in public
    for secret in (None, "x" * 43):
        ws = await hello(server.url, seen["client_id"], secret)
        got = await welcome(ws)
        assert got.node_id != seen["node_id"] and got.client_id != seen["client_id"]
        await ws.close()
    assert await asyncio.wait_for(victim, 120) == 0
    rounds = coordinator.status.snapshot()["rounds"]
    assert coordinator.status.state == "completed" and len(rounds) == 3
    # The victim trained on: 600 digits, one epoch a round (round 1 lands near 50% with unseeded shuffling).
    assert rounds[-1]["accuracy"] > 0.6 and rounds[-1]["accuracy"] > rounds[0]["accuracy"]
    # The victim kept its one connection to the end: never replaced, never reconnected.
    assert [over for node, over in lost if node == seen["node_id"]] == [True]
    assert coordinator.store.register_client(seen["client_id"], None, "python", None).node_id != seen["node_id"]


@pytest.mark.parametrize("code", [Close.REPLACED, Close.SERVER_ERROR, Close.GOING_AWAY, Close.TOO_SLOW])
async def test_the_agent_reconnects_to_its_node_after_any_close_but_1000(start_coordinator, code) -> None:
    coordinator, _server = start_coordinator(join_token=TOKEN, min_clients=50)
    agent = _agent(_server.url)
    await asyncio.to_thread(wait_for, lambda: coordinator.clients.count() == 1, 30, "the agent to join")
    [node] = coordinator.clients.node_ids()
    [before] = coordinator.clients.describe()
    _close_from_the_coordinator(coordinator, node, code)
    await asyncio.to_thread(
        wait_for,
        lambda: [c["address"] for c in coordinator.clients.describe()] not in ([], [before["address"]]),
        30,
        "the agent to come back",
    )
    assert coordinator.clients.node_ids() == [node]  # resumed with its secret
    assert not agent.done()
    _close_from_the_coordinator(coordinator, node, Close.RUN_COMPLETE)
    assert await asyncio.wait_for(agent, 30) == 0


def _close_from_the_coordinator(coordinator, node_id: int, code: int) -> None:
    client = coordinator.clients._clients[node_id]
    coordinator.clients._loop.call_soon_threadsafe(client.outbox.close, code)


async def test_an_unhandled_error_closes_with_1011_not_1000(start_coordinator: StartCoordinator, monkeypatch) -> None:
    coordinator, server = start_coordinator(join_token=TOKEN, min_clients=50)

    def broken(_hello: Hello) -> None:
        raise RuntimeError("the database is on fire")

    monkeypatch.setattr(coordinator, "register_client", broken)
    ws = await hello(server.url)
    assert await close_code(ws) == Close.SERVER_ERROR
    async with httpx.AsyncClient() as http:
        health = await http.get(server.url.replace("ws://", "http://").replace("/ws", "/healthz"))
    assert health.text == "ok"


async def test_a_hello_that_cannot_be_registered_now_is_told_to_try_again_later(
    start_coordinator: StartCoordinator, monkeypatch
) -> None:
    """A gateway whose coordinator does not answer in time: 1013 (retry), not 1011, and no node."""
    coordinator, server = start_coordinator(join_token=TOKEN, min_clients=50)

    def busy(_hello: Hello) -> None:
        raise RegistrationUnavailable("the coordinator did not register it within 30 s")

    monkeypatch.setattr(coordinator, "register_client", busy)
    ws = await hello(server.url)
    assert await close_code(ws) == Close.TRY_AGAIN_LATER
    assert coordinator.clients.count() == 0


async def test_a_silent_client_is_dropped_with_1001_not_1000(start_coordinator: StartCoordinator) -> None:
    coordinator, server = start_coordinator(join_token=TOKEN, min_clients=50, heartbeat_seconds=0.3)
    ws = await hello(server.url)
    await welcome(ws)
    # Not sending heartbeats; reading only, as a client that froze would not even do.
    with pytest.raises(ConnectionClosed) as info:
        while True:
            message = decode(await asyncio.wait_for(ws.recv(), 30))
            assert not isinstance(message, Error)
    assert info.value.rcvd is not None and info.value.rcvd.code == Close.GOING_AWAY
    assert coordinator.clients.count() == 0


async def slowly(frame: bytes, piece: int) -> AsyncIterator[bytes]:
    """`frame` as one message's fragments of `piece` bytes, one every 0.35 s."""
    for i in range(0, len(frame), piece):
        await asyncio.sleep(0.35)
        yield frame[i : i + piece]


async def test_a_client_sending_a_long_message_is_not_silent(start_coordinator: StartCoordinator) -> None:
    # Its heartbeats wait behind the message in the client, but its bytes keep arriving (above the minimum rate).
    coordinator, server = start_coordinator(join_token=TOKEN, min_clients=50, heartbeat_seconds=0.3, min_upload_rate=8)
    ws = await hello(server.url)
    await welcome(ws)
    started = time.monotonic()
    await ws.send(slowly(encode(Heartbeat(1)), 4))  # 11 bytes a second
    assert time.monotonic() - started > 3 * 0.9  # three times the silence that drops a client
    await ws.send(encode(Heartbeat(2)))
    await asyncio.sleep(0.2)
    assert coordinator.clients.count() == 1


async def test_a_message_trickling_in_below_the_minimum_rate_is_closed_with_4006(
    start_coordinator: StartCoordinator,
) -> None:
    # Bytes keep arriving, so it is not silent; but it would hold its share of the inbound budget for ever.
    coordinator, server = start_coordinator(join_token=TOKEN, min_clients=50, heartbeat_seconds=0.3, min_upload_rate=64)
    ws = await hello(server.url)
    await welcome(ws)
    started = time.monotonic()
    sending = asyncio.create_task(ws.send(slowly(encode(Heartbeat(1)), 2)))  # 6 bytes a second
    assert await close_code(ws) == Close.UPLOAD_TOO_SLOW
    assert not sending.done() or sending.exception() is not None  # closed before the message was through
    assert time.monotonic() - started < 3  # a silence period (0.9 s) of pace, then the next check
    sending.cancel()
    wait_for(lambda: coordinator.clients.count() == 0, 5, "the slow client to be removed")
