"""WebSocket close codes (RFC 6455 §7.4) and what each means in Pollen (SPEC §4.1).

1000 means "the run is complete" and nothing else. A client treats 1000, 1008
after `unauthorized`, and 1002 after `unsupported_version` as final, and
reconnects with backoff after any other code, so every other way a connection
ends has a code of its own.
"""

from __future__ import annotations

from enum import IntEnum

from coordinator.protocol.errors import ErrorCode


class Close(IntEnum):
    RUN_COMPLETE = 1000
    GOING_AWAY = 1001  # the coordinator shuts down, or dropped a client that went silent
    PROTOCOL_ERROR = 1002
    POLICY_VIOLATION = 1008  # a bad join token
    TOO_BIG = 1009
    SERVER_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # at capacity: too many bytes queued across all connections
    REPLACED = 4001  # a newer connection of the same node took over
    HELLO_DEADLINE = 4002
    TOO_SLOW = 4003  # the client does not read: its send queue is full
    RATE_LIMITED = 4004
    TOO_MANY_CONNECTIONS = 4005  # from this remote address
    UPLOAD_TOO_SLOW = 4006  # a message arrives slower than the coordinator's minimum rate

    @property
    def reason(self) -> str:
        """The reason text sent with the close frame."""
        return _REASONS[self]


_REASONS = {
    Close.RUN_COMPLETE: "run complete",
    Close.GOING_AWAY: "going away",
    Close.PROTOCOL_ERROR: "protocol error",
    Close.POLICY_VIOLATION: "policy violation",
    Close.TOO_BIG: "message too big",
    Close.SERVER_ERROR: "server error",
    Close.TRY_AGAIN_LATER: "at capacity, try again later",
    Close.REPLACED: "replaced by a newer connection",
    Close.HELLO_DEADLINE: "no hello in time",
    Close.TOO_SLOW: "too slow: not reading",
    Close.RATE_LIMITED: "too many messages",
    Close.TOO_MANY_CONNECTIONS: "too many connections from this address",
    Close.UPLOAD_TOO_SLOW: "too slow: a message is not arriving",
}

# Module-level names for the codes, as the endpoints and the spec's table use them.
RUN_COMPLETE, GOING_AWAY, PROTOCOL_ERROR = Close.RUN_COMPLETE, Close.GOING_AWAY, Close.PROTOCOL_ERROR
POLICY_VIOLATION, TOO_BIG, SERVER_ERROR = Close.POLICY_VIOLATION, Close.TOO_BIG, Close.SERVER_ERROR

_FOR_ERROR = {
    ErrorCode.UNAUTHORIZED: Close.POLICY_VIOLATION,
    ErrorCode.FRAME_TOO_LARGE: Close.TOO_BIG,
    ErrorCode.INTERNAL: Close.SERVER_ERROR,
}


def for_error(code: ErrorCode) -> Close:
    """The close code that follows a fatal error with this code: 1008, 1009, 1011, else 1002."""
    return _FOR_ERROR.get(code, Close.PROTOCOL_ERROR)


def reason_for(code: int) -> str:
    """The reason text for a close code; empty for codes outside the table."""
    try:
        return Close(code).reason
    except ValueError:
        return ""


def is_final(close_code: int, error_code: str | None = None) -> bool:
    """Whether a client should stop for good rather than reconnect with backoff."""
    return (
        close_code == Close.RUN_COMPLETE
        or (close_code == Close.POLICY_VIOLATION and error_code == ErrorCode.UNAUTHORIZED)
        or (close_code == Close.PROTOCOL_ERROR and error_code == ErrorCode.UNSUPPORTED_VERSION)
    )
