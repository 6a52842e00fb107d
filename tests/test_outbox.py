"""The outbox's writer: a dropped queue stops a send that never finishes, and nothing else stops it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from starlette.websockets import WebSocket

from coordinator.protocol.close_codes import Close
from coordinator.server.limits import ConnectionGate, ConnectionLimits
from coordinator.server.metrics import Metrics
from coordinator.server.outbox import Outbox, write


class _Socket:
    """A WebSocket whose peer reads the first `takes` frames, then nothing."""

    def __init__(self, takes: int) -> None:
        self.scope: dict[str, Any] = {}
        self.sent: list[bytes] = []
        self.closed: int | None = None
        self._takes = takes

    async def send_bytes(self, data: bytes) -> None:
        if len(self.sent) == self._takes:
            await asyncio.Event().wait()  # a paused transport that never drains
        self.sent.append(data)

    async def close(self, code: int, reason: str) -> None:
        self.closed = code


def _outbox() -> Outbox:
    limits = ConnectionLimits(join_token=None, max_frame_bytes=1 << 20, heartbeat_seconds=10)
    return Outbox(limits.max_send_buffer_bytes, ConnectionGate(limits))


async def test_dropping_the_queue_stops_a_send_that_never_finishes_and_closes_with_its_code() -> None:
    ws, outbox = _Socket(takes=1), _outbox()
    writer = asyncio.create_task(write(cast(WebSocket, ws), outbox, Metrics()))
    for frame in (b"a", b"b", b"c"):
        outbox.put(frame)
    for _ in range(100):  # until the writer took "b" and is stuck sending it
        await asyncio.sleep(0)
    assert outbox.bytes == len(b"c")
    outbox.close(Close.TOO_SLOW, discard=True)
    await asyncio.wait_for(writer, 5)
    assert ws.sent == [b"a"] and ws.closed == Close.TOO_SLOW


async def test_a_close_that_keeps_the_queue_sends_it_all_first() -> None:
    ws, outbox = _Socket(takes=10), _outbox()
    writer = asyncio.create_task(write(cast(WebSocket, ws), outbox, Metrics()))
    for frame in (b"a", b"b"):
        outbox.put(frame)
    outbox.close(Close.RUN_COMPLETE)
    await asyncio.wait_for(writer, 5)
    assert ws.sent == [b"a", b"b"] and ws.closed == Close.RUN_COMPLETE


async def test_the_writer_still_obeys_a_cancel_from_outside() -> None:
    ws, outbox = _Socket(takes=0), _outbox()
    writer = asyncio.create_task(write(cast(WebSocket, ws), outbox, Metrics()))
    outbox.put(b"a")
    for _ in range(100):
        await asyncio.sleep(0)
    assert outbox.bytes == 0
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(writer, 5)
    assert ws.closed is None
    outbox.close(Close.TOO_SLOW, discard=True)  # after its writer is gone: nothing to stop
