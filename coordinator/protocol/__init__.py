"""Protocol v1: pure encode/decode/validate, no I/O (see protocol/SPEC.md)."""

from coordinator.protocol.errors import ErrorCode, ProtocolError
from coordinator.protocol.frame import Frame, decode_frame, encode_frame
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
    decode,
    encode,
    parse,
)
from coordinator.protocol.tensors import check_tensors, decode_tensors, encode_tensors

__all__ = [
    "PROTOCOL_VERSIONS",
    "Chunk",
    "Error",
    "ErrorCode",
    "Frame",
    "Heartbeat",
    "Hello",
    "Message",
    "ProtocolError",
    "Result",
    "Task",
    "Welcome",
    "check_tensors",
    "decode",
    "decode_frame",
    "decode_tensors",
    "encode",
    "encode_frame",
    "encode_tensors",
    "parse",
]
