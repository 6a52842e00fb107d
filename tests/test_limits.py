"""Bounded resources: what one peer, or all of them, may hold before and after joining."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from coordinator.protocol import Chunk, Error, Hello, Welcome, decode, encode
from coordinator.protocol.close_codes import Close
from coordinator.protocol.frame import encode_frame
from coordinator.server.limits import AddressBuckets, TokenBucket
from coordinator.server.rejection_log import RejectionLog
from coordinator.server.transport import RECEIVE_BUFFER_BYTES

from .conftest import StartCoordinator, wait_for
from .wire import close_code

MiB = 1 << 20


async def join(url: str, **connect_options):
    ws = await connect(url, max_size=None, **connect_options)
    await ws.send(encode(Hello([1], None, None, "python", 1 << 24)))
    while not isinstance(welcome := decode(await asyncio.wait_for(ws.recv(decode=False), 30)), Welcome):
        pass
    return ws, welcome


async def test_no_hello_in_time_closes_with_4002(start_coordinator: StartCoordinator) -> None:
    _, server = start_coordinator(min_clients=50, hello_timeout=0.5)
    ws = await connect(server.url)
    assert await close_code(ws) == Close.HELLO_DEADLINE


async def test_connections_per_address_are_capped_with_4005(start_coordinator: StartCoordinator) -> None:
    coordinator, server = start_coordinator(min_clients=50, max_connections_per_address=2)
    first, _ = await join(server.url)
    second = await connect(server.url)  # counts before its hello, too
    third = await connect(server.url)
    assert await close_code(third) == Close.TOO_MANY_CONNECTIONS
    await second.close()
    await asyncio.to_thread(wait_for, lambda: coordinator.gate.connections("127.0.0.1") == 1, 10, "a free slot")
    fourth, _ = await join(server.url)
    assert coordinator.clients.count() == 2
    await first.close()
    await fourth.close()


async def test_too_many_messages_close_with_4004(start_coordinator: StartCoordinator) -> None:
    _, server = start_coordinator(min_clients=50, max_messages_per_second=5, message_burst=10)
    ws, _ = await join(server.url)
    # The client goes on sending after the limit: the coordinator reads (and drops) the rest until the client's
    # close frame, so that its kernel does not answer the unread bytes with a reset that overtakes the close frame.
    with contextlib.suppress(ConnectionClosed):
        for seq in range(30):
            await ws.send(encode_frame({"type": "heartbeat", "seq": seq}))
    assert await close_code(ws) == Close.RATE_LIMITED


def test_the_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back
    assert [bucket.take() for _ in range(2)] == [True, False]
    now[0] = 100.0  # never more than the burst
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_join_buckets_are_per_address_and_the_table_sheds_full_ones() -> None:
    now = [0.0]
    joins = AddressBuckets(rate=1, burst=2, clock=lambda: now[0])
    assert [joins.take("a") for _ in range(3)] == [True, True, False]
    assert joins.take("b")  # another address has its own
    for i in range(5000):  # a sweep of addresses, each seen once: full again a couple of seconds later
        now[0] = i / 1000
        joins.take(f"10.0.{i // 256}.{i % 256}")
    assert len(joins) <= 2 * 1024 + 1
    assert all(
        AddressBuckets(1, 0).take("a") for _ in range(100)
    )  # burst 0: no limit, as --max-connections-per-address 0


async def test_join_requests_over_the_rate_get_429_with_retry_after(start_coordinator: StartCoordinator) -> None:
    _, server = start_coordinator(min_clients=50, max_joins_per_second=0.5, max_connections_per_address=3)
    join_url = server.url.replace("ws://", "http://").removesuffix("/ws") + "/api/join"
    async with httpx.AsyncClient(timeout=10) as http:
        answers = [await http.get(join_url) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].json()["url"] == server.url
    assert answers[3].headers["retry-after"] == "2" and "retry" in answers[3].json()["error"]


def test_repeated_rejections_from_one_client_are_summarised() -> None:
    lines: list[str] = []

    class Collect:
        def log(self, _level: int, message: str, *args: object) -> None:
            lines.append(message % args)

    now = [0.0]
    rejections = RejectionLog(Collect(), first=3, interval=10, clock=lambda: now[0])  # type: ignore[arg-type]
    for i in range(1000):
        rejections.log(20, "1.2.3.4", "bad frame %d", i)
        rejections.log(20, "5.6.7.8", "bad frame %d", i)
    assert lines == [f"bad frame {i}" for i in range(3) for _ in (0, 1)]
    now[0] = 11.0
    rejections.log(20, "1.2.3.4", "bad frame %d", 1000)
    assert lines[-1] == "1.2.3.4: 998 more rejections in the last 11 s (latest: bad frame 1000)"
    rejections.log(20, "1.2.3.4", "bad frame %d", 1001)
    assert len(lines) == 7


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _push(coordinator, node_ids: list[int], frames: int) -> None:
    """What a run does to clients that do not read: queue task frames of 1 MiB each (distinct objects)."""
    for i in range(frames):
        for node in node_ids:
            coordinator.clients.send_task(node, f"t{i}", os.urandom(16) + bytes(MiB))
        time.sleep(0.002)


async def test_a_client_that_does_not_read_is_dropped_with_4003_and_memory_stays_bounded(start_coordinator) -> None:
    coordinator, server = start_coordinator(min_clients=50, max_send_buffer_bytes=8 * MiB)
    ws, welcome = await join(server.url, max_queue=1)  # the client library stops reading too
    before = _rss()
    await asyncio.to_thread(_push, coordinator, [welcome.node_id], 160)
    grown = _rss() - before
    await asyncio.to_thread(wait_for, lambda: coordinator.clients.count() == 0, 20, "the client to be dropped")
    assert coordinator.gate.buffered == 0
    assert grown < 64 * MiB, f"the coordinator grew by {grown / MiB:.0f} MiB for a client that does not read"
    assert await close_code(ws) == Close.TOO_SLOW


async def test_new_connections_are_refused_with_1013_while_too_much_is_queued(start_coordinator) -> None:
    coordinator, server = start_coordinator(
        min_clients=50, max_send_buffer_bytes=16 * MiB, max_buffered_bytes=16 * MiB, max_connections_per_address=0
    )
    stuck = [await join(server.url, max_queue=1) for _ in range(2)]
    nodes = [w.node_id for _, w in stuck]
    for _ in range(100):
        await asyncio.to_thread(_push, coordinator, nodes, 1)
        if coordinator.gate.buffered > 16 * MiB:
            break
    assert coordinator.gate.buffered > 16 * MiB and coordinator.clients.count() == 2
    late = await connect(server.url)
    assert await close_code(late) == Close.TRY_AGAIN_LATER
    for ws, _ in stuck:
        ws.transport.abort()
    await asyncio.to_thread(wait_for, lambda: coordinator.gate.buffered == 0, 20, "the queues to go")
    ws, _ = await join(server.url)
    await ws.close()


def _trickle(port: int, request_line: bytes, seconds: float) -> tuple[bool, float]:
    """Send a request line, then one header line every 0.2 s; (closed by the server?, seconds it took)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request_line)
        s.settimeout(0.2)
        while time.monotonic() - started < seconds:
            try:
                if s.recv(4096) == b"":
                    return True, time.monotonic() - started
            except TimeoutError:
                pass
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                return True, time.monotonic() - started
    return False, seconds


@pytest.mark.parametrize("path", [b"/ws", b"/healthz"])
async def test_a_slow_request_sender_is_cut_off(start_coordinator: StartCoordinator, path: bytes) -> None:
    _, server = start_coordinator(min_clients=50, request_timeout=1.0)
    line = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    closed, _ = await asyncio.to_thread(_trickle, server.port, line, 8.0)
    assert closed, "the server kept a trickling request open"
    async with httpx.AsyncClient() as http:  # an ordinary request is not affected
        assert (await http.get(f"http://127.0.0.1:{server.port}/healthz")).text == "ok"


async def test_a_big_first_message_is_refused_with_1009_before_it_is_buffered(start_coordinator) -> None:
    coordinator, server = start_coordinator(min_clients=50)
    ws = await connect(server.url, max_size=None)
    await ws.send(bytes(MiB))  # where a hello of a few hundred bytes belongs
    assert await close_code(ws) == Close.TOO_BIG
    ws, _ = await join(server.url)  # after the hello, messages up to the frame limit are fine
    await ws.send(encode_frame({"type": "heartbeat", "seq": 1, "pad": "x" * MiB}))
    while not isinstance(error := decode(await asyncio.wait_for(ws.recv(decode=False), 30)), Error):
        pass
    assert not error.fatal  # the protocol judged it (no such field), the transport let it through
    assert coordinator.clients.count() == 1
    await ws.close()


@pytest.mark.parametrize("trusted", [True, False])
async def test_behind_a_trusted_proxy_the_per_address_cap_counts_forwarded_clients(start_coordinator, trusted) -> None:
    _, server = start_coordinator(
        min_clients=50, max_connections_per_address=1, trusted_proxies="127.0.0.1" if trusted else "10.9.9.9"
    )

    async def via_proxy(client: str):
        return await connect(server.url, additional_headers={"X-Forwarded-For": client})

    first = await via_proxy("203.0.113.1")
    await first.send(encode(Hello([1], None, None, "python", 1 << 24)))
    await asyncio.wait_for(first.recv(), 30)  # admitted and welcomed
    other = await via_proxy("203.0.113.2")
    if trusted:
        await other.send(encode(Hello([1], None, None, "python", 1 << 24)))
        assert isinstance(decode(await asyncio.wait_for(other.recv(), 30)), Welcome)
        assert await close_code(await via_proxy("203.0.113.1")) == Close.TOO_MANY_CONNECTIONS
    else:  # an untrusted peer's header is ignored: both are the proxy's one address
        assert await close_code(other) == Close.TOO_MANY_CONNECTIONS


def _chunks(message_id: str, total: int, pieces: int, piece: int) -> list[bytes]:
    """The first `pieces` chunks of a message of `total` bytes that will never be finished."""
    count = total // piece
    return [encode(Chunk(message_id, i, count, total, os.urandom(piece))) for i in range(pieces)]


async def test_unfinished_chunks_past_max_message_bytes_close_the_connection_with_1009(start_coordinator) -> None:
    coordinator, server = start_coordinator(min_clients=50, max_message_bytes=4 * MiB, max_frame_bytes=MiB)
    ws, _ = await join(server.url)
    for frame in _chunks("m", 4 * MiB, 7, MiB // 2):  # 3.5 MiB held, each message within the 4 MiB bound
        await ws.send(frame)
    for frame in _chunks("m2", 4 * MiB, 2, MiB // 2):  # a second unfinished message: 4.5 MiB held
        await ws.send(frame)
    assert await close_code(ws) == Close.TOO_BIG
    await asyncio.to_thread(wait_for, lambda: coordinator.gate.buffered == 0, 20, "the held chunks to be released")


async def test_unfinished_chunks_count_against_the_coordinator_wide_buffer(start_coordinator) -> None:
    coordinator, server = start_coordinator(
        min_clients=50, max_message_bytes=6 * MiB, max_buffered_bytes=8 * MiB, max_send_buffer_bytes=MiB
    )
    first, _ = await join(server.url)
    for frame in _chunks("a", 6 * MiB, 10, MiB // 2):  # 5 MiB, within its own bound
        await first.send(frame)
    await asyncio.to_thread(wait_for, lambda: coordinator.gate.buffered >= 5 * MiB, 20, "the chunks to be held")
    second, _ = await join(server.url)
    for frame in _chunks("b", 6 * MiB, 10, MiB // 2):  # another 5 MiB: 10 MiB held in all, over 8
        await second.send(frame)
    assert await close_code(second) == Close.TRY_AGAIN_LATER
    await asyncio.to_thread(wait_for, lambda: coordinator.gate.buffered <= 5 * MiB, 20, "the second's chunks to go")
    await first.close()


def test_every_connection_inherits_a_capped_kernel_receive_buffer(start_coordinator: StartCoordinator) -> None:
    # Parked uploads wait in the kernel: autotuned buffers (tcp_rmem's 32 MiB) let a thousand of them push
    # the kernel into TCP memory pressure. The cap is set on the listening socket; accepted sockets inherit it.
    _, server = start_coordinator(min_clients=50)
    granted = server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert RECEIVE_BUFFER_BYTES <= granted <= 2 * RECEIVE_BUFFER_BYTES  # Linux doubles it for bookkeeping
    assert server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
