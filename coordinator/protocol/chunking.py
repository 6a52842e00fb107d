"""Splitting frames above the peer's limit into `chunk` frames and joining them (SPEC §7)."""

from __future__ import annotations

from coordinator.protocol.errors import ErrorCode, ProtocolError
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


class Reassembler:
    """Joins the pieces of chunked messages; one message per id, pieces in order."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._partial: dict[str, tuple[Chunk, list[bytes], int]] = {}

    def feed(self, chunk: Chunk) -> bytes | None:
        if chunk.total_bytes > self.max_message_bytes:
            self._partial.pop(chunk.message_id, None)
            raise ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"chunked message of {chunk.total_bytes} bytes exceeds the limit of {self.max_message_bytes}",
            )
        first, pieces, size = self._partial.get(chunk.message_id, (chunk, [], 0))
        consistent = (chunk.count, chunk.total_bytes) == (first.count, first.total_bytes)
        if not consistent or chunk.index != len(pieces) or chunk.index >= chunk.count:
            self._partial.pop(chunk.message_id, None)
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE,
                f"chunk {chunk.index}/{chunk.count} of {chunk.message_id!r} is out of order or inconsistent",
            )
        pieces.append(chunk.piece)
        size += len(chunk.piece)
        if size > chunk.total_bytes:
            self._partial.pop(chunk.message_id, None)
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"chunks of {chunk.message_id!r} exceed total_bytes")
        if len(pieces) < chunk.count:
            self._partial[chunk.message_id] = (first, pieces, size)
            return None
        self._partial.pop(chunk.message_id, None)
        if size != chunk.total_bytes:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, f"chunks of {chunk.message_id!r} hold {size} bytes, not {chunk.total_bytes}"
            )
        return b"".join(pieces)
