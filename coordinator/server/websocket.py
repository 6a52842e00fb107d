"""One client connection: Starlette WebSocket I/O around the sans-I/O `ServerProtocol`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from coordinator.protocol.endpoints import (
    HeartbeatReceived,
    HelloReceived,
    PeerError,
    ReplyReceived,
    ServerProtocol,
    State,
)
from coordinator.protocol.errors import ErrorCode, ProtocolError
from coordinator.protocol.messages import Error, Hello, Result, Welcome
from coordinator.server.clients import CLOSE_NORMAL, ClientRegistry, ConnectedClient, Outbox
from coordinator.server.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """How every connection is served; fixed for the coordinator's lifetime."""

    join_token: str | None
    max_frame_bytes: int
    heartbeat_seconds: float


class RunHost(Protocol):
    """What a connection needs from the coordinator, whichever run is current."""

    def register_client(self, hello: Hello) -> tuple[int, str]:
        """The node id and client id for a client that said hello (blocking: it may write to the database)."""
        ...

    @property
    def run_id(self) -> str:
        """The current run's id, for the welcome."""
        ...

    @property
    def run_over(self) -> bool:
        """True once the current run has ended: clients that join now are told so and closed."""
        ...

    def deliver(self, node_id: int, reply: Result | Error) -> bool:
        """Hand a reply to the current run; False if no task of this node is waiting for it."""
        ...


async def serve_connection(
    ws: WebSocket, limits: ConnectionLimits, clients: ClientRegistry, metrics: Metrics, host: RunHost
) -> None:
    """Serve one client until it leaves, goes silent, breaks the protocol or the run ends."""
    await ws.accept()
    conn = ServerProtocol(join_token=limits.join_token, max_frame_bytes=limits.max_frame_bytes)
    outbox: Outbox = asyncio.Queue()
    address = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
    client: ConnectedClient | None = None
    writer = asyncio.create_task(_write(ws, outbox, metrics))
    heartbeat = asyncio.create_task(_heartbeat(conn, outbox, limits.heartbeat_seconds))
    close_code = CLOSE_NORMAL
    try:
        while conn.state is not State.CLOSED:
            try:
                with anyio.fail_after(3 * limits.heartbeat_seconds):
                    message = await ws.receive()
            except TimeoutError:
                log.warning("client %s silent for %.0f s, dropping it", address, 3 * limits.heartbeat_seconds)
                break
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes")
            if data is None:
                conn.fail(
                    ProtocolError(
                        ErrorCode.INVALID_MESSAGE, "text messages are not part of the protocol; send binary frames"
                    ),
                    fatal=conn.state is State.AWAITING_HELLO,
                )
            else:
                metrics.bytes_in.inc(len(data))
                for event in conn.receive(data):
                    if isinstance(event, HelloReceived):
                        client = await _join(conn, event, limits, clients, host, outbox, address)
                    elif isinstance(event, ReplyReceived) and client is not None:
                        if not host.deliver(client.node_id, event.reply):
                            conn.send(
                                Error(
                                    ErrorCode.UNKNOWN_TASK.value,
                                    "that task is no longer waiting for a reply",
                                    event.reply.reply_to,
                                )
                            )
                    elif isinstance(event, PeerError):
                        log.info("client %s reports: %s %s", address, event.error.code, event.error.message)
                    elif isinstance(event, HeartbeatReceived):
                        pass
            metrics.count_rejections(conn.rejections)
            for frame in conn.data_to_send():
                outbox.put_nowait(frame)
        if conn.close_code is not None:
            close_code = conn.close_code
    except WebSocketDisconnect:
        pass
    finally:
        heartbeat.cancel()
        if client is not None:
            clients.remove(client)
            log.info("client %s (node %d) left", address, client.node_id)
        outbox.put_nowait(close_code)
        try:
            await asyncio.wait_for(writer, timeout=10)
        except Exception:
            writer.cancel()


async def _join(
    conn: ServerProtocol,
    event: HelloReceived,
    limits: ConnectionLimits,
    clients: ClientRegistry,
    host: RunHost,
    outbox: Outbox,
    address: str,
) -> ConnectedClient:
    hello = event.hello
    node_id, client_id = await anyio.to_thread.run_sync(host.register_client, hello)
    conn.accept(
        Welcome(event.version, client_id, node_id, host.run_id, limits.max_frame_bytes, limits.heartbeat_seconds)
    )
    client = ConnectedClient(node_id, client_id, hello.backend, hello.agent, address, conn, outbox)
    old = clients.add(client)
    if old is not None:
        old.outbox.put_nowait(CLOSE_NORMAL)
    log.info("client %s joined as node %d (%s)", address, node_id, hello.backend)
    if host.run_over:
        outbox.put_nowait(CLOSE_NORMAL)
    return client


async def _write(ws: WebSocket, outbox: Outbox, metrics: Metrics) -> None:
    """The only task that sends on this socket; an int in the queue means close with that code."""
    while isinstance(item := await outbox.get(), bytes):
        await ws.send_bytes(item)
        metrics.bytes_out.inc(len(item))
    with contextlib.suppress(RuntimeError):  # already closed by the peer
        await ws.close(item, "run complete" if item == CLOSE_NORMAL else None)


async def _heartbeat(conn: ServerProtocol, outbox: Outbox, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        if conn.state is State.OPEN:
            conn.heartbeat()
            for frame in conn.data_to_send():
                outbox.put_nowait(frame)
