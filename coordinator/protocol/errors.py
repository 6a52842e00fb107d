"""Protocol error codes (SPEC §6) and the exception that carries one."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_FRAME = "bad_frame"
    TRUNCATED = "truncated"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNAUTHORIZED = "unauthorized"
    NOT_READY = "not_ready"
    FRAME_TOO_LARGE = "frame_too_large"
    UNKNOWN_TASK = "unknown_task"
    INVALID_UPDATE = "invalid_update"
    TRAINING_FAILED = "training_failed"
    TASK_CANCELLED = "task_cancelled"
    INTERNAL = "internal"


def quote(value: object, limit: int = 64) -> str:
    """`repr(value)`, cut to `limit` characters: what a peer sent is quoted, never echoed in full."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


class ProtocolError(Exception):
    """A violation of the protocol, with the code to report to the peer."""

    def __init__(self, code: ErrorCode, message: str, *, reply_to: str | None = None, fatal: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reply_to = reply_to
        self.fatal = fatal  # the connection cannot go on (e.g. a per-connection bound was broken)
