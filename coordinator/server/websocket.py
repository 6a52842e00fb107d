"""One client connection: Starlette WebSocket I/O around the sans-I/O `ServerProtocol`.

Besides the protocol, a connection is bounded here: admission by the gate (per-address
cap, global send buffer), a deadline for `hello`, a message rate, a bounded outbox, and
a close code that says what happened (`close_codes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Protocol

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from coordinator.persistence.store import Registration
from coordinator.protocol.close_codes import Close
from coordinator.protocol.encodings import Encoding, negotiate
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
from coordinator.server.clients import ClientRegistry, ConnectedClient
from coordinator.server.limits import ConnectionGate, ConnectionLimits, TokenBucket
from coordinator.server.metrics import Metrics
from coordinator.server.outbox import Outbox, write
from coordinator.server.rejection_log import RejectionLog
from coordinator.server.transport import connection_of

log = logging.getLogger(__name__)
rejections = RejectionLog(log)


class RegistrationUnavailable(Exception):
    """A hello cannot be registered now (the registrar is busy or away): the client should retry later."""


class RunHost(Protocol):
    """What a connection needs from the coordinator, whichever run is current."""

    def register_client(self, hello: Hello) -> Registration:
        """The node for a client that said hello, resumed only with its secret (blocking: it writes to the database).

        Raises `RegistrationUnavailable` when it cannot say now; the connection is then closed with 1013.
        """
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

    def resume_tasks(self, node_id: int, task_ids: list[str]) -> list[str]:
        """The node is back, its secret checked, on a connection whose hello claims `task_ids` (SPEC §4.2).

        Returns those still open for this node, which are now due on the new connection; its other
        tasks held for its return fail. Called on the event loop, after the new connection replaced
        any older one of the node.
        """
        ...

    @property
    def encodings(self) -> tuple[Encoding, Encoding]:
        """The current run's update and weights encodings, for the clients that can use them (SPEC §2.1)."""
        ...


async def serve_connection(
    ws: WebSocket,
    limits: ConnectionLimits,
    gate: ConnectionGate,
    clients: ClientRegistry,
    metrics: Metrics,
    host: RunHost,
) -> None:
    """Serve one client until it leaves, goes silent, breaks the protocol or a limit, or the run ends."""
    address = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
    peer = ws.client.host if ws.client else "?"
    await ws.accept()
    refused = gate.enter(peer)
    if refused is not None:
        rejections.log(logging.WARNING, peer, "refused a connection from %s: %s", peer, refused.reason)
        with contextlib.suppress(RuntimeError, OSError):
            await ws.close(refused, refused.reason)
        return
    outbox = Outbox(limits.max_send_buffer_bytes, gate)
    writer = asyncio.create_task(write(ws, outbox, metrics))
    session = _Session(ws, limits, gate, outbox, clients, metrics, host, address, peer)
    try:
        close_code = await session.run()
    except WebSocketDisconnect:
        session.peer_gone = True
        close_code = Close.GOING_AWAY
    except Exception:
        log.exception("unhandled error serving %s; closing its connection with 1011", address)
        close_code = Close.SERVER_ERROR
    finally:
        gate.leave(peer)
        gate.buffered -= session.held
        session.heartbeat.cancel()
        if session.client is not None:
            clients.remove(session.client)
            log.debug("client %s (node %d) left", address, session.client.node_id)
    outbox.close(close_code, discard=session.peer_gone)
    try:
        await asyncio.wait_for(writer, timeout=10)
    except Exception:
        writer.cancel()
    outbox.release()


class _Session:
    """The reading side of one admitted connection."""

    def __init__(
        self,
        ws: WebSocket,
        limits: ConnectionLimits,
        gate: ConnectionGate,
        outbox: Outbox,
        clients: ClientRegistry,
        metrics: Metrics,
        host: RunHost,
        address: str,
        peer: str,
    ) -> None:
        self.ws, self.limits, self.gate, self.outbox, self.clients = ws, limits, gate, outbox, clients
        self.metrics, self.host, self.address, self.peer = metrics, host, address, peer
        self.conn = ServerProtocol(
            join_token=limits.join_token,
            max_frame_bytes=limits.max_frame_bytes,
            max_message_bytes=limits.max_message_bytes,
        )
        self.held = 0  # bytes of unfinished chunked messages, as counted in the gate
        self.client: ConnectedClient | None = None
        self.peer_gone = False  # nothing left to send to
        self.bucket = TokenBucket(limits.max_messages_per_second, limits.message_burst)
        self.heartbeat = asyncio.create_task(_heartbeat(self.conn, outbox, limits.heartbeat_seconds))

    async def run(self) -> int:
        """Read until the connection ends; returns the close code to send."""
        hello_deadline = time.monotonic() + self.limits.hello_timeout
        silence = 3 * self.limits.heartbeat_seconds
        conn = self.conn
        while conn.state is not State.CLOSED:
            joined = conn.state is State.OPEN
            wait = silence if joined else hello_deadline - time.monotonic()
            try:
                with anyio.fail_after(max(wait, 0)):
                    message = await self.ws.receive()
            except TimeoutError:
                if joined:
                    stalled = self._stalled(silence)
                    if stalled is None:
                        continue  # mid-upload, or its heartbeats are in the data the inbound budget keeps unread
                    return stalled
                self._reject("no hello within %.0f s", self.limits.hello_timeout)
                return Close.HELLO_DEADLINE
            if message["type"] == "websocket.disconnect":
                self.peer_gone = True
                return Close.GOING_AWAY
            if self.outbox.close_code is not None:  # replaced, or dropped for not reading
                return self.outbox.close_code
            if not self.bucket.take():
                self._reject("over %g messages a second", self.limits.max_messages_per_second)
                return Close.RATE_LIMITED
            data = message.get("bytes")
            del message  # a delta must not stay referenced here while the next message is awaited
            await self._handle(data)
            del data
            if self.outbox.close_code is not None:  # its hello could not be registered now
                return self.outbox.close_code
            self.gate.buffered += conn.held_bytes - self.held
            self.held = conn.held_bytes
            if self.held and self.gate.buffered > self.limits.max_buffered_bytes:
                self._reject("the coordinator is at capacity: dropping %d bytes of unfinished chunks", self.held)
                return Close.TRY_AGAIN_LATER
            if conn.rejections:  # new since the last count, which clears them
                self._reject("rejected frame(s): %s", ", ".join(conn.rejections))
            self.metrics.count_rejections(conn.rejections)
            for frame in conn.outgoing():
                self.outbox.put(frame)
        return conn.close_code or Close.PROTOCOL_ERROR

    def _stalled(self, within: float) -> Close | None:
        """Why a client that sent no whole message for `within` seconds must go; None if it may stay.

        The inbound budget may hold its data unread, or a large message may take longer to arrive
        than three heartbeat periods (its heartbeats queue behind it, in the client): bytes that
        arrived within `within` seconds count as signs of life, whole messages or not. But a
        message that trickles in below `--min-upload-rate` holds its share of the budget, and
        everyone waiting behind it, for as long as its sender likes: it goes with 4006.
        """
        connection = connection_of(self.ws.scope)
        if connection is not None and connection.held_back:
            return None
        if connection is None or time.monotonic() - connection.last_read >= within:
            # Heartbeats stopped: the client is gone or stuck. 1001, not 1000: if it is
            # still there, it must reconnect, not conclude the run is over.
            log.warning("client %s silent for %.0f s, dropping it", self.address, within)
            return Close.GOING_AWAY
        rate = self.limits.min_upload_rate
        if rate and connection.slower_than(rate, within):
            self._reject("a message arriving at under %g bytes a second", rate)
            return Close.UPLOAD_TOO_SLOW
        return None

    async def _handle(self, data: bytes | None) -> None:
        conn = self.conn
        if data is None:
            conn.fail(
                ProtocolError(
                    ErrorCode.INVALID_MESSAGE, "text messages are not part of the protocol; send binary frames"
                ),
                fatal=conn.state is State.AWAITING_HELLO,
            )
            return
        self.metrics.bytes_in.inc(len(data))
        for event in conn.receive(data):
            if isinstance(event, HelloReceived):
                self.client = await self._join(event)
            elif isinstance(event, ReplyReceived) and self.client is not None:
                if not self.host.deliver(self.client.node_id, event.reply):
                    conn.send(
                        Error(
                            ErrorCode.UNKNOWN_TASK.value,
                            "that task is no longer waiting for a reply",
                            event.reply.reply_to,
                        )
                    )
            elif isinstance(event, PeerError):
                rejections.log(
                    logging.INFO,
                    self.peer,
                    "client %s reports: %s %s",
                    self.address,
                    event.error.code,
                    event.error.message,
                )
            elif isinstance(event, HeartbeatReceived):
                pass

    async def _join(self, event: HelloReceived) -> ConnectedClient | None:
        hello = event.hello
        try:
            who: Registration = await anyio.to_thread.run_sync(self.host.register_client, hello)
        except RegistrationUnavailable as exc:
            log.warning("client %s: %s; closing with 1013", self.address, exc)
            self.outbox.close(Close.TRY_AGAIN_LATER)
            return None
        limits = self.limits
        chosen = _encodings(hello, *self.host.encodings)
        client = ConnectedClient(
            who.node_id,
            who.client_id,
            hello.backend,
            hello.agent,
            self.address,
            self.conn,
            self.outbox,
            weights_encoding=chosen["weights"] if chosen else "fp32",
            resumable=hello.resumable,
        )
        # From here to the welcome nothing awaits: no task of the run can reach this connection before it.
        old = self.clients.add(client)  # the older connection's tasks are lost, or held for this one
        if old is not None:
            old.outbox.close(Close.REPLACED)
            log.info(
                "node %d: a newer connection from %s replaces the one from %s", who.node_id, self.address, old.address
            )
        # A fresh node (no secret, or a wrong one: `who.secret` is the one just issued) has no tasks to take up.
        resumed = self.host.resume_tasks(who.node_id, hello.resume or []) if who.secret is None else []
        self.conn.accept(
            Welcome(
                event.version,
                who.client_id,
                who.node_id,
                self.host.run_id,
                limits.max_frame_bytes,
                limits.heartbeat_seconds,
                who.secret,
                chosen,
                None if hello.resume is None else resumed,
            )
        )
        # Per-join lines at debug: thousands of joins would spend the event loop on log rendering.
        log.debug("client %s joined as node %d (%s)", self.address, who.node_id, hello.backend)
        if self.host.run_over:
            self.outbox.close(Close.RUN_COMPLETE)
        return client

    def _reject(self, what: str, *args: object) -> None:
        rejections.log(logging.WARNING, self.peer, "client %s: " + what, self.address, *args)


def _encodings(hello: Hello, update: Encoding, weights: Encoding) -> dict[str, str] | None:
    """What a client that listed encodings gets (SPEC §2.1); None (fp32, unsaid) for one that listed none."""
    if hello.encodings is None:
        return None
    return {
        "update": negotiate(hello.encodings.get("update"), update),
        "weights": negotiate(hello.encodings.get("weights"), weights),
    }


async def _heartbeat(conn: ServerProtocol, outbox: Outbox, every: float) -> None:
    # Clients join in bursts (a page shared, a coordinator restarted): a random phase keeps thousands of
    # heartbeats from falling due in the same moment of the event loop, every period, for good.
    await asyncio.sleep(random.uniform(0, every))
    while True:
        if conn.state is State.OPEN:
            conn.heartbeat()
            for frame in conn.outgoing():
                outbox.put(frame)
        await asyncio.sleep(every)
