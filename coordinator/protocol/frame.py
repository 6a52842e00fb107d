"""Frame layout (SPEC §1): magic, header length, canonical JSON header, payload."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import rfc8785

from coordinator.protocol.errors import ErrorCode, ProtocolError, quote
from coordinator.protocol.limits import MAX_HEADER_BYTES, load_json
from coordinator.protocol.tensors import aligned_in_frame

MAGIC = b"PLN1"
PREFIX = struct.Struct("<4sI")


@dataclass(frozen=True)
class Frame:
    header: dict[str, Any]
    # A view into the received message, not a copy: a delta is read in place until it is folded.
    payload: bytes | memoryview = field(default=b"", repr=False)

    @property
    def type(self) -> str:
        return str(self.header["type"])


def encode_frame(header: dict[str, Any], payload: bytes | memoryview = b"", *, tensors: bool = False) -> bytes:
    """The frame of `header` and `payload`; a `tensors` payload is laid out for aligned reads (SPEC §2)."""
    body = rfc8785.dumps(header)
    prefix = PREFIX.pack(MAGIC, len(body))
    if tensors and payload:
        head, data = aligned_in_frame(payload, PREFIX.size + len(body))
        return b"".join((prefix, body, head, data))
    return prefix + body + payload


def decode_frame(data: bytes | memoryview) -> Frame:
    """Split a frame into its header and payload; any malformed or over-limit frame raises ProtocolError."""
    if len(data) < PREFIX.size:
        raise ProtocolError(ErrorCode.TRUNCATED, f"frame of {len(data)} bytes is shorter than its 8-byte prefix")
    magic, length = PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"bad magic {quote(magic)}, expected {MAGIC!r}")
    if length > MAX_HEADER_BYTES:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"header length {length} exceeds {MAX_HEADER_BYTES} bytes")
    end = PREFIX.size + length
    if length < 2 or end > len(data):
        raise ProtocolError(ErrorCode.TRUNCATED, f"header length {length} does not fit a frame of {len(data)} bytes")
    try:
        text = bytes(data[PREFIX.size : end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"header is not UTF-8: {exc.reason} at byte {exc.start}") from None
    header = load_json(text)
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "header must be a JSON object with a string 'type'")
    return Frame(header, memoryview(data)[end:])
