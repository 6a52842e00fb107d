"""WebSocket close codes (RFC 6455 §7.4) and what each means in Pollen (SPEC §4.1).

1000 means "the run is complete" and nothing else. A client treats 1000, 1008
after `unauthorized`, and 1002 after `unsupported_version` as final, and
reconnects with backoff after any other code.
"""

from __future__ import annotations

from coordinator.protocol.errors import ErrorCode

RUN_COMPLETE = 1000
GOING_AWAY = 1001  # the coordinator is restarting
PROTOCOL_ERROR = 1002
POLICY_VIOLATION = 1008  # a bad join token, or a peer that breaks a per-connection bound
TOO_BIG = 1009
SERVER_ERROR = 1011
TRY_AGAIN_LATER = 1013  # the coordinator is at capacity
REPLACED = 4001  # a newer connection of the same node took over
HELLO_DEADLINE = 4002
TOO_SLOW = 4003  # the client does not read: its send queue is full
RATE_LIMITED = 4004
TOO_MANY_CONNECTIONS = 4005  # from this remote address

_FOR_ERROR = {
    ErrorCode.UNAUTHORIZED: POLICY_VIOLATION,
    ErrorCode.FRAME_TOO_LARGE: TOO_BIG,
    ErrorCode.INTERNAL: SERVER_ERROR,
}


def for_error(code: ErrorCode) -> int:
    """The close code that follows a fatal error with this code: 1008, 1009, 1011, else 1002."""
    return _FOR_ERROR.get(code, PROTOCOL_ERROR)


def is_final(close_code: int, error_code: str | None = None) -> bool:
    """Whether a client should stop for good rather than reconnect with backoff."""
    return (
        close_code == RUN_COMPLETE
        or (close_code == POLICY_VIOLATION and error_code == ErrorCode.UNAUTHORIZED)
        or (close_code == PROTOCOL_ERROR and error_code == ErrorCode.UNSUPPORTED_VERSION)
    )
