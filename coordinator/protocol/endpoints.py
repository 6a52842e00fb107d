"""Sans-I/O protocol state machines for both ends of a connection (SPEC §4).

Feed received bytes to `receive()`; it returns events. Frames to send pile up
in `data_to_send()`. Neither class touches a socket, a clock or a thread, so the
same logic runs under Starlette, the `websockets` client and the tests.
"""

from __future__ import annotations

import hmac
import itertools
import uuid
from dataclasses import dataclass
from enum import Enum, auto

from coordinator.protocol import close_codes
from coordinator.protocol.chunking import (
    DEFAULT_MAX_PARTIAL_MESSAGES,
    Outgoing,
    Reassembler,
    SharedFrame,
    split_frame,
)
from coordinator.protocol.errors import ErrorCode, ProtocolError
from coordinator.protocol.frame import PREFIX, decode_frame
from coordinator.protocol.limits import MAX_HEADER_BYTES
from coordinator.protocol.messages import (
    PROTOCOL_VERSIONS,
    Chunk,
    Error,
    Heartbeat,
    Hello,
    Message,
    Result,
    Task,
    Welcome,
    encode,
    parse,
)

DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 512 * 1024 * 1024

# Before welcome only `hello` may arrive, and a hello is a header without payload.
MAX_HELLO_FRAME_BYTES = PREFIX.size + MAX_HEADER_BYTES

CLOSE_PROTOCOL_ERROR = close_codes.PROTOCOL_ERROR
CLOSE_POLICY_VIOLATION = close_codes.POLICY_VIOLATION


class State(Enum):
    AWAITING_HELLO = auto()
    OPEN = auto()
    CLOSED = auto()


@dataclass(frozen=True)
class HelloReceived:
    hello: Hello
    version: int


@dataclass(frozen=True)
class ReplyReceived:
    reply: Result | Error


@dataclass(frozen=True)
class TaskReceived:
    task: Task


@dataclass(frozen=True)
class Welcomed:
    welcome: Welcome


@dataclass(frozen=True)
class PeerError:
    error: Error


@dataclass(frozen=True)
class HeartbeatReceived:
    seq: int


Event = HelloReceived | ReplyReceived | TaskReceived | Welcomed | PeerError | HeartbeatReceived


class _Endpoint:
    def __init__(
        self, max_frame_bytes: int, max_message_bytes: int, max_partial_bytes: int | None, max_partial_messages: int
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.peer_max_frame_bytes = DEFAULT_MAX_FRAME_BYTES
        self.state = State.AWAITING_HELLO
        self.close_code: int | None = None
        self._outbox: list[Outgoing] = []
        self._reassembler = Reassembler(
            max_message_bytes, max_partial_bytes=max_partial_bytes, max_partial_messages=max_partial_messages
        )
        self._seq = itertools.count()
        self.rejections: list[str] = []  # codes of the errors this side sent, for metrics

    def data_to_send(self) -> list[bytes]:
        """The frames queued since the last call, as bytes (a broadcast's pieces are joined)."""
        return [bytes(frame) for frame in self.outgoing()]

    def outgoing(self) -> list[Outgoing]:
        """The frames queued since the last call, a broadcast's as the `SharedPiece`s every peer shares.

        For I/O that sends many peers the same broadcast: it writes each piece's parts as they are,
        so that neither the queue nor the socket's buffer holds a copy per peer.
        """
        out, self._outbox = self._outbox, []
        return out

    @property
    def held_bytes(self) -> int:
        """Bytes held in unfinished chunked messages (at most the reassembler's `max_partial_bytes`)."""
        return self._reassembler.held_bytes

    def send_frame(self, frame: bytes) -> None:
        """Queue an already-encoded frame, chunked to the peer's limit; nothing is sent once closed."""
        if self.state is State.CLOSED:
            return
        self._outbox.extend(split_frame(frame, self.peer_max_frame_bytes, uuid.uuid4().hex))

    def send(self, message: Message) -> None:
        self.send_frame(encode(message))

    def heartbeat(self) -> None:
        self.send(Heartbeat(next(self._seq)))

    def fail(self, exc: ProtocolError, *, fatal: bool, close_code: int | None = None) -> None:
        """Send the error; if fatal, close with `close_code` (by default the one SPEC §4.1 names for its code)."""
        if self.state is State.CLOSED:
            return
        self.rejections.append(exc.code.value)
        self.send(Error.from_exception(exc, fatal=fatal))
        if fatal:
            self.state = State.CLOSED
            self.close_code = close_codes.for_error(exc.code) if close_code is None else close_code
            self._reassembler.clear()

    def _frame_limit(self) -> int:
        return self.max_frame_bytes

    def _read(self, data: bytes) -> Message | None:
        """One received WebSocket message → a complete message, or None while chunks gather."""
        limit = self._frame_limit()
        if len(data) > limit:
            raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"frame of {len(data)} bytes exceeds the limit of {limit}")
        message = parse(decode_frame(data))
        if isinstance(message, Chunk) and self.state is not State.OPEN:
            # Nothing is reassembled for a peer that has not been welcomed: it could hold memory unauthenticated.
            raise ProtocolError(ErrorCode.NOT_READY, "chunk before welcome")
        if isinstance(message, Chunk):
            whole = self._reassembler.feed(message)
            if whole is None:
                return None
            message = parse(decode_frame(whole))
            if isinstance(message, Chunk):
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a chunk may not carry another chunk")
        return message


class ServerProtocol(_Endpoint):
    """The coordinator's side of one client connection."""

    def __init__(
        self,
        *,
        join_token: str | None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_partial_bytes: int | None = None,
        max_partial_messages: int = DEFAULT_MAX_PARTIAL_MESSAGES,
        versions: tuple[int, ...] = PROTOCOL_VERSIONS,
    ) -> None:
        """`max_partial_bytes` (default: `max_message_bytes`) and `max_partial_messages` bound what unfinished
        chunked messages may hold on this connection; breaking either closes it."""
        super().__init__(max_frame_bytes, max_message_bytes, max_partial_bytes, max_partial_messages)
        self.join_token = join_token
        self.versions = versions
        self.in_flight: set[str] = set()
        self.hello: Hello | None = None

    def _frame_limit(self) -> int:
        return self.max_frame_bytes if self.state is State.OPEN else min(self.max_frame_bytes, MAX_HELLO_FRAME_BYTES)

    def receive(self, data: bytes) -> list[Event]:
        """Events for one received WebSocket message; never raises: violations become queued errors."""
        if self.state is State.CLOSED:
            return []
        try:
            message = self._read(data)
            if message is None:
                return []
            return self._handle(message)
        except ProtocolError as exc:
            # Before the handshake nothing is trusted, so any violation ends the connection.
            self.fail(exc, fatal=self.state is State.AWAITING_HELLO or exc.fatal)
            return []

    def _handle(self, message: Message) -> list[Event]:
        if self.state is State.AWAITING_HELLO:
            if not isinstance(message, Hello) or self.hello is not None:
                # Between hello and welcome the coordinator is deciding; an honest client waits.
                raise ProtocolError(ErrorCode.NOT_READY, f"expected hello, got {type(message).__name__.lower()}")
            return self._handshake(message)
        if isinstance(message, Heartbeat):
            return [HeartbeatReceived(message.seq)]
        if isinstance(message, Result | Error):
            if message.reply_to is None:
                return [PeerError(message)] if isinstance(message, Error) else []
            if message.reply_to not in self.in_flight:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_TASK, f"no task {message.reply_to!r} is in flight on this connection"
                )
            self.in_flight.discard(message.reply_to)
            return [ReplyReceived(message)]
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"a client may not send {type(message).__name__.lower()}")

    def _handshake(self, hello: Hello) -> list[Event]:
        common = set(hello.versions) & set(self.versions)
        if not common:
            raise_fatal = ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"client speaks protocol versions {hello.versions}, coordinator speaks {list(self.versions)}",
            )
            self.fail(raise_fatal, fatal=True)
            return []
        if self.join_token is not None and not hmac.compare_digest(
            (hello.token or "").encode(), self.join_token.encode()
        ):
            self.fail(ProtocolError(ErrorCode.UNAUTHORIZED, "missing or wrong join token"), fatal=True)
            return []
        self.hello = hello
        self.peer_max_frame_bytes = hello.max_frame_bytes
        return [HelloReceived(hello, max(common))]

    def accept(self, welcome: Welcome) -> None:
        """Welcome the client; the tasks the welcome lists as `resumed` are in flight on this connection from now."""
        self.send(welcome)
        self.state = State.OPEN
        self.in_flight.update(welcome.resumed or ())

    def fail_task(self, error: Error) -> None:
        """Tell the client its reply was refused (e.g. an invalid update the grid found)."""
        self.rejections.append(error.code)
        self.send(error)

    def send_task(self, task_id: str, frame: bytes | SharedFrame) -> None:
        """Queue a pre-encoded train/evaluate frame; nothing once closed.

        A `SharedFrame` (the round's broadcast) is queued as the very pieces every other peer
        gets: nothing is copied for this connection (see `outgoing`).
        """
        if self.state is State.CLOSED:
            return
        self.in_flight.add(task_id)
        if isinstance(frame, SharedFrame):
            self._outbox.extend(frame.frames(self.peer_max_frame_bytes))
        else:
            self.send_frame(frame)


class ClientProtocol(_Endpoint):
    """A client's side of the connection."""

    def __init__(
        self,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_partial_bytes: int | None = None,
        max_partial_messages: int = DEFAULT_MAX_PARTIAL_MESSAGES,
    ) -> None:
        super().__init__(max_frame_bytes, max_message_bytes, max_partial_bytes, max_partial_messages)
        self.welcome: Welcome | None = None

    def hello(
        self,
        *,
        token: str | None,
        client_id: str | None,
        backend: str,
        agent: str | None = None,
        secret: str | None = None,
        encodings: dict[str, list[str]] | None = None,
        resumable: bool = False,
        resume: list[str] | None = None,
    ) -> None:
        """Queue the opening `hello`; `client_id` with its `secret` resumes that node (SPEC §4). `encodings`:
        what this client can send and read (SPEC §2.1). `resumable`: this client keeps its jobs across
        reconnects; `resume`: the tasks of its previous connection it can still finish (SPEC §4.2)."""
        hello = Hello(
            list(PROTOCOL_VERSIONS),
            token,
            client_id,
            backend,
            self.max_frame_bytes,
            agent,
            secret,
            encodings,
            resumable,
            resume,
        )
        self.send(hello)

    def receive(self, data: bytes) -> list[Event]:
        """Events for one received WebSocket message; never raises: violations become queued errors."""
        if self.state is State.CLOSED:
            return []
        try:
            message = self._read(data)
        except ProtocolError as exc:
            self.fail(exc, fatal=exc.fatal)
            return []
        if message is None:
            return []
        if isinstance(message, Welcome):
            self.welcome = message
            self.peer_max_frame_bytes = message.max_frame_bytes
            self.state = State.OPEN
            return [Welcomed(message)]
        if isinstance(message, Task):
            return [TaskReceived(message)]
        if isinstance(message, Heartbeat):
            return [HeartbeatReceived(message.seq)]
        if isinstance(message, Error):
            if message.fatal:
                self.state = State.CLOSED
            return [PeerError(message)]
        self.fail(ProtocolError(ErrorCode.INVALID_MESSAGE, f"a coordinator may not send {message.type}"), fatal=False)
        return []
