"""Frame layout (SPEC §1): magic, header length, canonical JSON header, payload."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import rfc8785

from coordinator.protocol.errors import ErrorCode, ProtocolError

MAGIC = b"PLN1"
PREFIX = struct.Struct("<4sI")


@dataclass(frozen=True)
class Frame:
    header: dict[str, Any]
    payload: bytes = field(default=b"", repr=False)

    @property
    def type(self) -> str:
        return str(self.header["type"])


def encode_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    body = rfc8785.dumps(header)
    return PREFIX.pack(MAGIC, len(body)) + body + payload


def decode_frame(data: bytes) -> Frame:
    if len(data) < PREFIX.size:
        raise ProtocolError(ErrorCode.TRUNCATED, f"frame of {len(data)} bytes is shorter than its 8-byte prefix")
    magic, length = PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"bad magic {magic!r}, expected {MAGIC!r}")
    end = PREFIX.size + length
    if length < 2 or end > len(data):
        raise ProtocolError(ErrorCode.TRUNCATED, f"header length {length} does not fit a frame of {len(data)} bytes")
    try:
        header = json.loads(data[PREFIX.size : end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "header must be a JSON object with a string 'type'")
    return Frame(header, bytes(data[end:]))
