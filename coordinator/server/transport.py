"""uvicorn's protocol classes with the two limits uvicorn lacks, for a server open to anyone.

* `RequestDeadline`: uvicorn waits for an HTTP request's headers without end (its keep-alive
  timeout covers only idle connections between requests), so a client trickling one header
  line at a time holds a connection forever. With it, the headers of each request, a
  WebSocket upgrade included, must be complete within `request_timeout` seconds.
* `FlowControlledWebSocket`: uvicorn's sans-I/O WebSocket protocol writes every frame into the
  transport at once and ignores the transport's pause/resume signals, so a client that does
  not read grows the write buffer without limit. With it, sends wait while the transport is
  paused, the backlog stays in the connection's bounded `Outbox`, and a connection that does
  not drain after its close is aborted. It also holds the first message (which must be the
  `hello`) to `FIRST_MESSAGE_MAX_BYTES`, so an unauthenticated peer cannot make the server
  buffer a message of `ws_max_size` bytes before the protocol has seen anything, and it
  hands each received message to the app without uvicorn's two copies of it. Connections
  share an `InboundBudget` for the bytes they hold received (see `inbound`): above it, a
  connection stops reading until the rest drains. What a connection does not read waits in
  the kernel, so each socket's receive buffer is capped (`RECEIVE_BUFFER_BYTES`, set on the
  listening socket, whose connections inherit it: see `serving`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import sys
import time
from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State as ProtocolState

from coordinator.protocol.chunking import SharedPiece
from coordinator.server.inbound import InboundBudget
from coordinator.server.payloads import POPULATE_BYTES, SPARES, Payload, take_payloads

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    HTTP_BASE: type[H11Protocol] | type[HttpToolsProtocol] = HttpToolsProtocol
except ImportError:  # uvicorn's choice too: httptools when it is installed, h11 otherwise
    HTTP_BASE = H11Protocol

log = logging.getLogger(__name__)

CLOSE_GRACE_SECONDS = 5.0  # after a close, time for the peer to take the rest before the socket is cut
FIRST_MESSAGE_MAX_BYTES = 64 * 1024  # a hello is a few hundred bytes
# A parser buffer keeps at most this much room beyond four times what it holds: at 64 KiB, a thousand
# connections kept 1.1-1.5 models of a 6.65 MB model after a round; at 4 KiB, 0.74-0.80 (same peak).
SHRINK_ABOVE_BYTES = 4 * 1024
# A connection the budget does not read keeps what arrives in its kernel receive buffer, which Linux
# autotunes up to tcp_rmem's maximum (32 MiB here). A thousand parked uploads then took the kernel past
# tcp_mem: it dropped segments of the one connection allowed to read, whose retransmission backoff
# (up to a minute) stalled the round. Capped, a thousand sockets hold at most a quarter of a gigabyte;
# the price is a window of about this size per client (2.6 MB/s at 50 ms round trip).
RECEIVE_BUFFER_BYTES = 128 * 1024
ANNOUNCED_HEADROOM_BYTES = POPULATE_BYTES  # of a frame under way, counted before it arrives (see `_account`)
HELD_BACK_EXTENSION = "pollen.inbound"  # ASGI scope extension: {"connection": FlowControlledWebSocket}


class _RequestDeadlineMixin:
    """Closes the connection if a request's headers are not complete `request_timeout` s after it may start."""

    request_timeout: float = 10.0
    # Provided by uvicorn's HTTP protocol classes.
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    client: tuple[str, int] | None
    _deadline: asyncio.TimerHandle | None = None
    _awaiting: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self._upgraded() or self.cycle is not self._awaiting:
            self._disarm()  # the headers are in: a request (or an upgrade) has begun

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm()  # keep-alive: the next request's headers get the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._disarm()
        self._awaiting = self.cycle
        self._deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _upgraded(self) -> bool:
        current: object = self.transport.get_protocol()
        return current is not self

    def _expire(self) -> None:
        self._deadline = None
        if self._upgraded() or self.cycle is not self._awaiting or self.transport.is_closing():
            return
        log.info("%s sent no complete request in %.0f s; closing", _peer(self.client), self.request_timeout)
        self.transport.close()


def request_deadline_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (httptools, or h11) with a deadline of `seconds` for request headers."""
    return type("RequestDeadline", (_RequestDeadlineMixin, HTTP_BASE), {"request_timeout": seconds})


class FlowControlledWebSocket(WebSocketsSansIOProtocol):
    _gone = False
    inbound: InboundBudget | None = None  # shared by every connection (see `flow_controlled_websocket`)
    _parked = False
    _queued = 0  # bytes of received messages the app has not taken yet
    _in_app = 0  # bytes of the message the app took last: it holds them until it asks for the next
    _handed: Payload | None = None  # that message, if it is a payload: a spare once the app is done
    last_read = 0.0  # time.monotonic() when bytes last arrived
    received = 0  # bytes that arrived, in all
    _pace_from = (0.0, 0)  # (time, bytes received then) since which the message under way is timed
    _draining = False  # our close frame is out: read and discard until the peer's (see `_await_peer_close`)
    _socket: Any = None  # the transport itself, once `transport` is wrapped by `_ClosesAfterHandshake`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reader = take_payloads(self.conn.reader)
        self._reader.room = self._room  # type: ignore[method-assign]
        # The parser reads each frame's limit from `max_message_size` when the frame starts, and
        # `recv_frame` runs before the next one starts: lifting the limit there covers frame two on.
        full, self.conn.max_message_size = self.conn.max_message_size, FIRST_MESSAGE_MAX_BYTES
        recv_frame = self.conn.recv_frame

        def until_first_message(frame: Frame) -> None:
            recv_frame(frame)
            if frame.fin and frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self.conn.max_message_size = full
                self.conn.recv_frame = recv_frame  # type: ignore[method-assign]

        self.conn.recv_frame = until_first_message  # type: ignore[method-assign]

    def data_received(self, data: bytes) -> None:
        if self._draining:
            self._drain(data)
            return
        self.last_read = time.monotonic()
        if not self.mid_message:
            self._pace_from = (self.last_read, self.received)  # a message starts
        self.received += len(data)
        super().data_received(data)
        buffer = self._reader.buffer
        if sys.getsizeof(buffer) > 4 * len(buffer) + SHRINK_ABOVE_BYTES:
            # A bytearray keeps its allocation when its front is consumed: after one delta, every
            # connection would keep a model-sized parser buffer for good. Keep only what is left.
            self._reader.compact()
        self._account()

    def _account(self) -> None:
        """Tell the budget what this connection holds: unparsed bytes, a fragmented message, queued messages,
        and the message the app is handling.

        A frame under way counts what has arrived of it plus up to `ANNOUNCED_HEADROOM_BYTES` more of
        what its header announced. Counted as it arrives, a thousand clients answering at once each
        started an upload (a read each, all below the budget) and sat parked in the middle of it, a
        read or two each, far past the budget in all; counted whole from its header, a client
        trickling a large frame at the minimum upload rate would hold a frame's worth of everyone's
        budget for as long as it liked.
        """
        if self.inbound is not None and not self._gone:
            counted = self._reader.counted(ANNOUNCED_HEADROOM_BYTES)
            self.inbound.hold(self, counted + len(self.bytes) + self._queued + self._in_app)

    def _room(self, n: int) -> bool:
        """Whether the budget can count `n` bytes more now (a large payload received into a spare)."""
        return self.inbound is not None and self.inbound.total + n <= self.inbound.limit

    def fileno(self) -> int:
        sock = None if self.transport.is_closing() else self.transport.get_extra_info("socket")
        return -1 if sock is None else int(sock.fileno())

    @property
    def mid_message(self) -> bool:
        """True while part of a message has arrived and the rest has not."""
        return bool(self._reader.pending) or bool(self.bytes)

    def slower_than(self, rate: float, at_least: float) -> bool:
        """True if the message under way has arrived at under `rate` bytes a second for `at_least` seconds.

        Only the time this connection was free to read counts: the clock restarts when a message
        starts and when the budget lets the connection read again.
        """
        if not self.mid_message or self.held_back:
            return False
        since, then = self._pace_from
        elapsed = time.monotonic() - since
        return elapsed >= at_least and self.received - then < rate * elapsed

    @property
    def held_back(self) -> bool:
        """True while the budget keeps this connection's data unread (its silence is not the client's)."""
        return self.inbound is not None and self.inbound.held_back(self)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if hasattr(self, "scope"):  # the app finds this connection's `held_back` through its scope
            self.scope["extensions"][HELD_BACK_EXTENSION] = {"connection": self}
        self._socket = self.transport
        self.transport = _ClosesAfterHandshake(self)  # type: ignore[assignment]

    def _await_peer_close(self) -> bool:
        """uvicorn closes the socket right after our close frame; True if it must wait for the peer's instead.

        Closing a socket with input still unread makes the kernel answer with a reset, which can
        overtake the close frame: a client that was still sending (past a rate limit, say) would
        never learn why it was closed. So, once our close frame is out, the connection reads and
        discards until the peer's close frame arrives, then closes; `run_asgi` bounds the wait.
        """
        if not self.close_sent or self._gone or self.conn.close_rcvd is not None:
            return False
        if not self._draining:
            self._draining = True
            if self.inbound is not None:
                self.inbound.forget(self)
            self._parked = self.read_paused = False
            self._socket.resume_reading()
        return True

    def _drain(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.conn.events_received()  # after our close frame, nothing the peer sends is for the app
        self.conn.data_to_send()
        if self.conn.close_rcvd is not None or self.conn.state is ProtocolState.CLOSED or self.conn.parser_exc:
            self._socket.close()

    def park(self) -> None:
        self._parked = True
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def unpark(self) -> None:
        self._parked = False
        self.last_read = time.monotonic()  # its silence while held back was not the client's
        self._pace_from = (self.last_read, self.received)
        if not self.read_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    async def receive(self) -> Any:
        # uvicorn's, with the budget's say: reading resumes only if this connection is not parked.
        # A message stays charged to the budget while the app decodes, checks and folds it, until the
        # app asks for the next one: a delta being folded is memory like one being received.
        if self._in_app:
            self._in_app = 0
            self._account()
        done, self._handed = self._handed, None
        if done is not None:
            # Large spares: up to half the budget, so that what the budget lets in and what waits as
            # spares stay within one and a half budgets. Without a budget, none.
            SPARES.give(done, 0 if self.inbound is None else self.inbound.limit // 2)
        del done
        message = await self.queue.get()
        data: Any = message.get("bytes") if message["type"] == "websocket.receive" else None
        self._queued -= len(data) if data else 0
        self._in_app = len(data) if data else 0
        if type(data) is Payload:
            self._handed = data
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            if not self._parked:
                self.transport.resume_reading()
        self._account()
        return message

    def handle_bytes(self, event: Frame) -> None:
        # uvicorn copies a binary message twice (into a bytearray, then into bytes) and keeps the bytearray
        # until the next message: two model-sized copies per client that sent a delta. A whole-message frame
        # goes to the app as the parser's own bytes, and nothing keeps it after the app is done with it.
        if not event.fin:
            super().handle_bytes(event)
            return
        self.bytes = bytearray()
        self.curr_msg_data_type = "bytes"
        data = event.data if isinstance(event.data, bytes | Payload) else bytes(event.data)  # see `payloads`
        # websockets' parser keeps its last frame in a local until the next frame arrives (a heartbeat,
        # seconds later): without this, every client that just sent a delta would hold on to it.
        event.data = b""
        self._queued += len(data)
        self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def send_receive_event_to_app(self) -> None:
        self._queued += len(self.bytes)
        super().send_receive_event_to_app()
        self.bytes = bytearray()  # a fragmented message, delivered: do not hold it until the next one

    async def send_shared(self, piece: SharedPiece) -> None:
        """Send a piece of a broadcast as one binary message, writing its parts as they are (no copy).

        uvicorn's send would serialise each message into bytes of its own: a copy per connection,
        which stays in the transport's buffer while the client reads. Written here, uvloop's
        transport keeps references to the parts every connection shares for whatever the socket
        has not taken yet. (asyncio's own transport, on Python 3.11, would join them into a copy.)
        Nothing is written once the connection is closing.
        """
        await self.writable.wait()
        if self.close_sent or self.transport.is_closing() or self.conn.state is not ProtocolState.OPEN:
            return
        self.transport.writelines([_binary_frame_head(len(piece)), *piece.parts])

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inbound is not None and not self._gone and not self._draining:
            self.inbound.forget(self)
        self._gone = True
        self.writable.set()  # wake blocked senders; they find the connection closed
        super().connection_lost(exc)

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.close" and not self.writable.is_set():
            # The peer does not read: queue the close frame behind the backlog instead of waiting for
            # room that may never come; run_asgi's grace period decides the rest.
            self.writable.set()
        await super().send(message)

    async def run_asgi(self) -> None:
        await super().run_asgi()
        # uvicorn then calls transport.close(), which waits for the write buffer to drain:
        # forever, if the peer never reads.
        self.loop.call_later(CLOSE_GRACE_SECONDS, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if not self._gone:
            self.transport.abort()


def connection_of(scope: Mapping[str, Any]) -> FlowControlledWebSocket | None:
    """The connection an ASGI WebSocket scope belongs to (None under another server)."""
    found = scope.get("extensions", {}).get(HELD_BACK_EXTENSION, {}).get("connection")
    return found if isinstance(found, FlowControlledWebSocket) else None


class _ClosesAfterHandshake:
    """A connection's transport whose `close` waits for the closing handshake (see `_await_peer_close`)."""

    def __init__(self, connection: FlowControlledWebSocket) -> None:
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection._socket, name)

    def close(self) -> None:
        if not self._connection._await_peer_close():
            self._connection._socket.close()


def flow_controlled_websocket(inbound: InboundBudget) -> type[FlowControlledWebSocket]:
    """`FlowControlledWebSocket` whose connections share one budget for the bytes they hold received."""
    return type("BudgetedWebSocket", (FlowControlledWebSocket,), {"inbound": inbound})


def _binary_frame_head(length: int) -> bytes:
    """The head of a final, unmasked binary WebSocket frame (RFC 6455 §5.2) carrying `length` bytes.

    A server's frames are never masked, and this server negotiates no extension (no RSV bits).
    """
    if length < 126:
        return struct.pack("!BB", 0x82, length)
    if length < 1 << 16:
        return struct.pack("!BBH", 0x82, 126, length)
    return struct.pack("!BBQ", 0x82, 127, length)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
