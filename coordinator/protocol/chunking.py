"""Splitting frames above the peer's limit into `chunk` frames and joining them (SPEC §7)."""

from __future__ import annotations

import threading
import uuid

from coordinator.protocol.errors import ErrorCode, ProtocolError, quote
from coordinator.protocol.frame import PREFIX, encode_frame
from coordinator.protocol.messages import Chunk

# Room for the chunk frame's own prefix and header; generous so it never depends on id length.
CHUNK_OVERHEAD = 512


def split_frame(frame: bytes, max_frame_bytes: int, message_id: str) -> list[bytes]:
    """Return `[frame]` if it fits, else the chunk frames that carry it."""
    if len(frame) <= max_frame_bytes:
        return [frame]
    piece = max_frame_bytes - CHUNK_OVERHEAD - PREFIX.size
    if piece <= 0:
        raise ValueError(f"max_frame_bytes {max_frame_bytes} is too small to chunk into")
    count = -(-len(frame) // piece)
    return [
        encode_frame(Chunk(message_id, i, count, len(frame)).header(), frame[i * piece : (i + 1) * piece])
        for i in range(count)
    ]


# A broadcast goes out in pieces of at most this: a peer that reads slowly pins one piece in its socket's
# buffers, never a whole model, and a writer can stop between pieces to let other connections write.
PACE_BYTES = 256 * 1024

Buffer = bytes | memoryview


class SharedPiece:
    """One frame of a broadcast, as the parts it is made of: every peer sending it shares the object.

    The parts are the frame's own head and views of the shared payload, so the pieces hold no
    copy of it, and neither do the peers that queue them: I/O writes the parts to the socket as
    they are (`FlowControlledWebSocket.send_shared`), or makes the frame for one write with
    `bytes(piece)`.
    """

    __slots__ = ("parts", "size")

    def __init__(self, parts: tuple[Buffer, ...]) -> None:
        self.parts = parts
        self.size = sum(len(p) for p in parts)

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


Outgoing = bytes | SharedPiece  # a frame queued to a peer: its own, or a piece of a broadcast


class SharedFrame:
    """One encoded frame for many peers (a round's task): chunked once per chunk size, never copied per peer.

    The frame is given as its head (prefix and header) and its payload, whole or in parts (the
    global weights come as the buffers they live in), and is never joined: its pieces are views
    of it. Every peer whose `max_frame_bytes` is at least `pace_bytes` gets the very same list of
    pieces; a peer with a smaller limit gets a list made once for that limit.
    Thread-safe.
    """

    def __init__(
        self, head: bytes, payload: Buffer | list[Buffer] | tuple[Buffer, ...], *, pace_bytes: int = PACE_BYTES
    ) -> None:
        parts = [payload] if isinstance(payload, bytes | memoryview) else list(payload)
        self._parts = tuple(memoryview(p).cast("B") for p in (head, *parts) if len(p))
        self.size = sum(len(p) for p in self._parts)  # bytes of the frame itself
        self.pace_bytes = pace_bytes
        self._message_id = uuid.uuid4().hex  # one message to each peer; ids need only be unique per connection
        self._lock = threading.Lock()
        self._frames: dict[int, list[SharedPiece]] = {}
        self.frames(pace_bytes)  # the common case, made now: not on the event loop

    def frames(self, max_frame_bytes: int) -> list[SharedPiece]:
        """The frames to send a peer that takes frames of at most `max_frame_bytes`."""
        limit = min(max_frame_bytes, self.pace_bytes)
        with self._lock:
            if limit not in self._frames:
                self._frames[limit] = self._split(limit)
            return self._frames[limit]

    def wire_bytes(self, max_frame_bytes: int = PACE_BYTES) -> int:
        """Bytes on the wire for one peer (the frame plus its chunk headers)."""
        return sum(len(f) for f in self.frames(max_frame_bytes))

    def join(self) -> bytes:
        """The whole frame (for tests and fakes: a peer is sent `frames`)."""
        return b"".join(self._parts)

    def _split(self, limit: int) -> list[SharedPiece]:
        if self.size <= limit:
            return [SharedPiece(self._parts)]
        piece = limit - CHUNK_OVERHEAD - PREFIX.size
        if piece <= 0:
            raise ValueError(f"max_frame_bytes {limit} is too small to chunk into")
        count = -(-self.size // piece)
        return [
            SharedPiece(
                (encode_frame(Chunk(self._message_id, i, count, self.size).header()), *self._slice(i * piece, piece))
            )
            for i in range(count)
        ]

    def _chunk_head(self, index: int, count: int) -> bytes:
        return encode_frame(Chunk(self._message_id, index, count, self.size).header())

    def _slice(self, start: int, length: int) -> list[memoryview]:
        """Views of the frame's bytes [start, start + length), across its parts."""
        out, at, end = [], 0, start + length
        for part in self._parts:
            lo, hi = max(start - at, 0), min(end - at, len(part))
            if lo < hi:
                out.append(part[lo:hi])
            at += len(part)
            if at >= end:
                break
        return out


DEFAULT_MAX_PARTIAL_MESSAGES = 4  # an honest peer sends one chunked message at a time


class Reassembler:
    """Joins the pieces of chunked messages; one message per id, pieces in order.

    What unfinished messages hold is bounded per connection: at most
    `max_partial_messages` messages and `max_partial_bytes` bytes. Breaking
    either bound raises a fatal ProtocolError; any other bad chunk drops its
    message and raises a non-fatal one.
    """

    def __init__(
        self,
        max_message_bytes: int,
        *,
        max_partial_bytes: int | None = None,
        max_partial_messages: int = DEFAULT_MAX_PARTIAL_MESSAGES,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_partial_bytes = max_message_bytes if max_partial_bytes is None else max_partial_bytes
        self.max_partial_messages = max_partial_messages
        self._partial: dict[str, tuple[Chunk, list[bytes | memoryview], int]] = {}
        self.held_bytes = 0  # bytes in unfinished messages

    @property
    def partial_messages(self) -> int:
        return len(self._partial)

    def clear(self) -> None:
        self._partial.clear()
        self.held_bytes = 0

    def _drop(self, message_id: str) -> None:
        dropped = self._partial.pop(message_id, None)
        if dropped is not None:
            self.held_bytes -= dropped[2]

    def feed(self, chunk: Chunk) -> bytes | None:
        """Take one chunk; return the whole message once its last piece arrives, else None."""
        name = quote(chunk.message_id, 40)
        if chunk.total_bytes > self.max_message_bytes:
            self._drop(chunk.message_id)
            raise ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"chunked message of {chunk.total_bytes} bytes exceeds the limit of {self.max_message_bytes}",
            )
        first, pieces, size = self._partial.get(chunk.message_id, (chunk, [], 0))
        if not pieces and len(self._partial) >= self.max_partial_messages:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE,
                f"more than {self.max_partial_messages} chunked messages are unfinished at once",
                fatal=True,
            )
        consistent = (chunk.count, chunk.total_bytes) == (first.count, first.total_bytes)
        if (
            not consistent
            or chunk.index != len(pieces)
            or chunk.index >= chunk.count
            or chunk.count > chunk.total_bytes
            or not chunk.piece
        ):
            self._drop(chunk.message_id)
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE,
                f"chunk {chunk.index}/{chunk.count} of {name} is out of order or inconsistent",
            )
        if size + len(chunk.piece) > chunk.total_bytes:
            self._drop(chunk.message_id)
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"chunks of {name} exceed total_bytes")
        if self.held_bytes + len(chunk.piece) > self.max_partial_bytes:
            self.clear()
            raise ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"unfinished chunked messages would hold more than {self.max_partial_bytes} bytes",
                fatal=True,
            )
        pieces.append(chunk.piece)
        size += len(chunk.piece)
        self.held_bytes += len(chunk.piece)
        self._partial[chunk.message_id] = (first, pieces, size)
        if len(pieces) < chunk.count:
            return None
        self._drop(chunk.message_id)
        if size != chunk.total_bytes:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, f"chunks of {name} hold {size} bytes, not {chunk.total_bytes}"
            )
        return b"".join(pieces)
