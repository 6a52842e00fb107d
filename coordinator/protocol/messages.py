"""Typed messages (SPEC §3) and their mapping to and from frames."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from coordinator.protocol.errors import ErrorCode, ProtocolError
from coordinator.protocol.frame import Frame, decode_frame, encode_frame
from coordinator.protocol.limits import MAX_ERROR_MESSAGE_CHARS
from coordinator.protocol.schema import validate_header

PROTOCOL_VERSIONS = (1,)


@dataclass(frozen=True)
class Hello:
    type: ClassVar[str] = "hello"
    versions: list[int]
    token: str | None
    client_id: str | None
    backend: str
    max_frame_bytes: int
    agent: str | None = None
    secret: str | None = None  # the credential a previous welcome issued with `client_id`
    encodings: dict[str, list[str]] | None = None  # {"update": [...], "weights": [...]} (SPEC §2.1)
    resumable: bool = False  # the client keeps its jobs across reconnects (SPEC §4.2)
    resume: list[str] | None = None  # the tasks it can still finish from its previous connection (SPEC §4.2)

    def header(self) -> dict[str, Any]:
        caps: dict[str, Any] = {"backend": self.backend, "max_frame_bytes": self.max_frame_bytes}
        if self.agent is not None:
            caps["agent"] = self.agent
        if self.encodings is not None:
            caps["encodings"] = self.encodings
        if self.resumable:  # false is the default: unsaid, as a client that predates it says nothing
            caps["resumable"] = True
        header: dict[str, Any] = {
            "type": self.type,
            "versions": self.versions,
            "token": self.token,
            "client_id": self.client_id,
            "capabilities": caps,
        }
        if self.secret is not None:
            header["secret"] = self.secret
        if self.resume is not None:
            header["resume"] = self.resume
        return header

    @classmethod
    def from_frame(cls, frame: Frame) -> Hello:
        h = frame.header
        caps = h["capabilities"]
        return cls(
            h["versions"],
            h["token"],
            h["client_id"],
            caps["backend"],
            caps["max_frame_bytes"],
            caps.get("agent"),
            h.get("secret"),
            caps.get("encodings"),
            caps.get("resumable", False),
            h.get("resume"),
        )


@dataclass(frozen=True)
class Welcome:
    type: ClassVar[str] = "welcome"
    version: int
    client_id: str
    node_id: int
    run_id: str
    max_frame_bytes: int
    heartbeat_seconds: float
    secret: str | None = None  # issued with a new node: present it with `client_id` to resume that node
    encodings: dict[str, str] | None = None  # {"update": E, "weights": E}: only to a client that listed some
    resumed: list[str] | None = None  # of the hello's `resume`, those now in flight here: only to a client that asked

    def header(self) -> dict[str, Any]:
        header = {"type": self.type, **{f.name: getattr(self, f.name) for f in fields(self)}}
        for optional in ("secret", "encodings", "resumed"):
            if header[optional] is None:
                del header[optional]
        return header

    @classmethod
    def from_frame(cls, frame: Frame) -> Welcome:
        return cls(**{f.name: frame.header[f.name] for f in fields(cls) if f.name in frame.header})


@dataclass(frozen=True)
class Task:
    """A `train` or `evaluate` instruction; the payload holds the global weights."""

    kind: str
    task_id: str
    run_id: str
    round: int
    model: dict[str, Any]
    config: dict[str, Any]
    weights: bytes | memoryview = field(default=b"", repr=False)
    data: dict[str, Any] | None = None  # the run's data schema (SPEC §2.3), when it has one

    def header(self) -> dict[str, Any]:
        head = {
            "type": self.kind,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "round": self.round,
            "model": self.model,
            "config": self.config,
        }
        return head if self.data is None else {**head, "data": self.data}

    @classmethod
    def from_frame(cls, frame: Frame) -> Task:
        h = frame.header
        return cls(
            h["type"], h["task_id"], h["run_id"], h["round"], h["model"], h["config"], frame.payload, h.get("data")
        )


@dataclass(frozen=True)
class Result:
    type: ClassVar[str] = "result"
    reply_to: str
    num_examples: int
    metrics: dict[str, float]
    delta: bytes | memoryview = field(default=b"", repr=False)

    def header(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "reply_to": self.reply_to,
            "num_examples": self.num_examples,
            "metrics": self.metrics,
        }

    @classmethod
    def from_frame(cls, frame: Frame) -> Result:
        h = frame.header
        return cls(h["reply_to"], h["num_examples"], h["metrics"], frame.payload)


@dataclass(frozen=True)
class Error:
    type: ClassVar[str] = "error"
    code: str
    message: str
    reply_to: str | None = None
    fatal: bool = False

    def header(self) -> dict[str, Any]:
        """The error's header; a message longer than the schema allows is cut, never sent whole."""
        message = self.message
        if len(message) > MAX_ERROR_MESSAGE_CHARS:
            message = message[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
        return {
            "type": self.type,
            "code": self.code,
            "message": message,
            "reply_to": self.reply_to,
            "fatal": self.fatal,
        }

    @classmethod
    def from_frame(cls, frame: Frame) -> Error:
        h = frame.header
        return cls(h["code"], h["message"], h["reply_to"], h["fatal"])

    @classmethod
    def from_exception(cls, exc: ProtocolError, *, fatal: bool = False) -> Error:
        return cls(exc.code.value, exc.message, exc.reply_to, fatal)


@dataclass(frozen=True)
class Heartbeat:
    type: ClassVar[str] = "heartbeat"
    seq: int

    def header(self) -> dict[str, Any]:
        return {"type": self.type, "seq": self.seq}

    @classmethod
    def from_frame(cls, frame: Frame) -> Heartbeat:
        return cls(frame.header["seq"])


@dataclass(frozen=True)
class Chunk:
    type: ClassVar[str] = "chunk"
    message_id: str
    index: int
    count: int
    total_bytes: int
    piece: bytes | memoryview = field(default=b"", repr=False)

    def header(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message_id": self.message_id,
            "index": self.index,
            "count": self.count,
            "total_bytes": self.total_bytes,
        }

    @classmethod
    def from_frame(cls, frame: Frame) -> Chunk:
        h = frame.header
        return cls(h["message_id"], h["index"], h["count"], h["total_bytes"], frame.payload)


Message = Hello | Welcome | Task | Result | Error | Heartbeat | Chunk

_PAYLOAD_ATTR = {Task: "weights", Result: "delta", Chunk: "piece"}
_DECODERS: dict[str, Any] = {
    "hello": Hello.from_frame,
    "welcome": Welcome.from_frame,
    "train": Task.from_frame,
    "evaluate": Task.from_frame,
    "result": Result.from_frame,
    "error": Error.from_frame,
    "heartbeat": Heartbeat.from_frame,
    "chunk": Chunk.from_frame,
}


def encode(message: Message) -> bytes:
    attr = _PAYLOAD_ATTR.get(type(message))
    payload: bytes = getattr(message, attr) if attr else b""
    return encode_frame(message.header(), payload, tensors=isinstance(message, Task | Result))


def parse(frame: Frame) -> Message:
    """Validate a decoded frame against its schema and build the typed message."""
    validate_header(frame.header)
    carries_payload = frame.type in ("train", "evaluate", "result", "chunk")
    if frame.payload and not carries_payload:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"{frame.type} frames carry no payload")
    if frame.type in ("train", "evaluate") and not frame.payload:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"{frame.type} frames must carry the global weights")
    message: Message = _DECODERS[frame.type](frame)
    return message


def decode(data: bytes) -> Message:
    return parse(decode_frame(data))
