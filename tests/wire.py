"""Reading what a coordinator sends over a raw WebSocket, for the tests that speak the protocol by hand."""

from __future__ import annotations

import asyncio
import weakref

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from coordinator.protocol import Chunk, decode
from coordinator.protocol.chunking import Reassembler
from coordinator.protocol.messages import Message

_reassemblers: weakref.WeakKeyDictionary[ClientConnection, Reassembler] = weakref.WeakKeyDictionary()


async def read_message(ws: ClientConnection, timeout: float = 30) -> Message:
    """The next whole message: chunks (the coordinator sends large tasks in pieces) are put together."""
    while True:
        message = decode(await asyncio.wait_for(ws.recv(decode=False), timeout))
        if not isinstance(message, Chunk):
            return message
        whole = _reassemblers.setdefault(ws, Reassembler(1 << 30)).feed(message)
        if whole is not None:
            return decode(whole)


async def next_message(ws: ClientConnection, kind: type) -> object:
    """The next message of a kind, skipping heartbeats and anything else."""
    while True:
        message = await read_message(ws)
        if isinstance(message, kind):
            return message


async def close_code(ws: ClientConnection) -> int:
    """Read until the coordinator closes; its close code."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), 30)
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code
