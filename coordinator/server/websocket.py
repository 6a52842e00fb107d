"""One client connection: Starlette WebSocket I/O around the sans-I/O `ServerConnection`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from coordinator.persistence.store import Store
from coordinator.protocol.errors import ErrorCode, ProtocolError
from coordinator.protocol.messages import Error, Welcome
from coordinator.protocol.session import (
    HeartbeatReceived,
    HelloReceived,
    PeerError,
    ReplyReceived,
    ServerConnection,
    State,
)
from coordinator.server.clients import CLOSE_NORMAL, ClientRegistry, ClientSession, Outbox
from coordinator.server.grid import WebSocketGrid
from coordinator.server.metrics import Metrics
from coordinator.server.status import RunStatus
from coordinator.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Hub:
    """What every connection needs to reach."""

    settings: Settings
    store: Store
    clients: ClientRegistry
    status: RunStatus
    metrics: Metrics
    grid: WebSocketGrid | None = None


async def serve_connection(ws: WebSocket, hub: Hub) -> None:
    await ws.accept()
    conn = ServerConnection(join_token=hub.settings.join_token, max_frame_bytes=hub.settings.max_frame_bytes)
    outbox: Outbox = asyncio.Queue()
    address = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
    session: ClientSession | None = None
    writer = asyncio.create_task(_write(ws, outbox, hub.metrics))
    heartbeat = asyncio.create_task(_heartbeat(conn, outbox, hub.settings.heartbeat_seconds))
    close_code = CLOSE_NORMAL
    try:
        while conn.state is not State.CLOSED:
            try:
                with anyio.fail_after(3 * hub.settings.heartbeat_seconds):
                    message = await ws.receive()
            except TimeoutError:
                log.warning("client %s silent for %.0f s, dropping it", address, 3 * hub.settings.heartbeat_seconds)
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
                hub.metrics.bytes_in.inc(len(data))
                for event in conn.receive(data):
                    if isinstance(event, HelloReceived):
                        session = await _join(ws, conn, event, hub, outbox, address)
                    elif isinstance(event, ReplyReceived) and session is not None:
                        grid = hub.grid
                        if grid is None or not grid.deliver(session.node_id, event.reply):
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
            hub.metrics.count_rejections(conn.rejections)
            for frame in conn.data_to_send():
                outbox.put_nowait(frame)
        if conn.close_code is not None:
            close_code = conn.close_code
    except WebSocketDisconnect:
        pass
    finally:
        heartbeat.cancel()
        if session is not None:
            hub.clients.remove(session)
            log.info("client %s (node %d) left", address, session.node_id)
        outbox.put_nowait(close_code)
        try:
            await asyncio.wait_for(writer, timeout=10)
        except Exception:
            writer.cancel()


async def _join(
    ws: WebSocket,
    conn: ServerConnection,
    event: HelloReceived,
    hub: Hub,
    outbox: Outbox,
    address: str,
) -> ClientSession:
    hello = event.hello
    node_id, client_id = await anyio.to_thread.run_sync(
        hub.store.register_client, hello.client_id, hello.backend, hello.agent
    )
    conn.accept(
        Welcome(
            event.version,
            client_id,
            node_id,
            hub.status.run_id or "",
            hub.settings.max_frame_bytes,
            hub.settings.heartbeat_seconds,
        )
    )
    session = ClientSession(node_id, client_id, hello.backend, hello.agent, address, conn, outbox)
    old = hub.clients.add(session)
    if old is not None:
        old.outbox.put_nowait(CLOSE_NORMAL)
    log.info("client %s joined as node %d (%s)", address, node_id, hello.backend)
    if hub.status.finished.is_set():
        outbox.put_nowait(CLOSE_NORMAL)
    return session


async def _write(ws: WebSocket, outbox: Outbox, metrics: Metrics) -> None:
    """The only task that sends on this socket; an int in the queue means close with that code."""
    while isinstance(item := await outbox.get(), bytes):
        await ws.send_bytes(item)
        metrics.bytes_out.inc(len(item))
    with contextlib.suppress(RuntimeError):  # already closed by the peer
        await ws.close(item, "run complete" if item == CLOSE_NORMAL else None)


async def _heartbeat(conn: ServerConnection, outbox: Outbox, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        if conn.state is State.OPEN:
            conn.heartbeat()
            for frame in conn.data_to_send():
                outbox.put_nowait(frame)
