"""WebSocket close codes the coordinator uses (SPEC §4), with the reason sent along.

Clients end for good only on 1000; every other code means "reconnect with backoff", so
1000 is reserved for a completed run and each other way a connection ends has its own code.
"""

from __future__ import annotations

from enum import IntEnum


class Close(IntEnum):
    RUN_COMPLETE = 1000
    GOING_AWAY = 1001  # the coordinator shuts down, or dropped a client that went silent
    PROTOCOL_ERROR = 1002
    POLICY = 1008  # unauthorized
    TOO_BIG = 1009
    SERVER_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # at capacity: too many bytes queued across all connections
    REPLACED = 4001  # a newer connection of the same node took over
    HELLO_DEADLINE = 4002
    TOO_SLOW = 4003  # the client does not read: its send queue is full
    RATE_LIMIT = 4004
    TOO_MANY_CONNECTIONS = 4005  # from this address

    @property
    def reason(self) -> str:
        return _REASONS[self]


_REASONS = {
    Close.RUN_COMPLETE: "run complete",
    Close.GOING_AWAY: "going away",
    Close.PROTOCOL_ERROR: "protocol error",
    Close.POLICY: "policy violation",
    Close.TOO_BIG: "message too big",
    Close.SERVER_ERROR: "server error",
    Close.TRY_AGAIN_LATER: "at capacity, try again later",
    Close.REPLACED: "replaced by a newer connection",
    Close.HELLO_DEADLINE: "no hello in time",
    Close.TOO_SLOW: "too slow: not reading",
    Close.RATE_LIMIT: "too many messages",
    Close.TOO_MANY_CONNECTIONS: "too many connections from this address",
}


def reason_for(code: int) -> str:
    """The reason text for a close code; empty for codes outside the table."""
    try:
        return Close(code).reason
    except ValueError:
        return ""
