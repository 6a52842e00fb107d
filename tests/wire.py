"""Reading what a coordinator sends over a raw WebSocket, for the tests that speak the protocol by hand."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from coordinator.protocol import decode


async def next_message(ws: ClientConnection, kind: type) -> object:
    """The next message of a kind, skipping heartbeats and anything else."""
    while True:
        message = decode(await asyncio.wait_for(ws.recv(decode=False), 30))
        if isinstance(message, kind):
            return message


async def close_code(ws: ClientConnection) -> int:
    """Read until the coordinator closes; its close code."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), 30)
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code
