"""A connection's outgoing queue, bounded in bytes, and the one task that writes it to the socket.

A client that stops reading makes the socket stop taking data; frames then pile up here. Past
the connection's cap the queue is dropped and the connection closed with 4003, so a client
cannot make the coordinator hold more than `max_send_buffer_bytes` (plus one frame) for it.
A round's task is queued as the `SharedPiece`s every connection shares: they count against the
connection's cap (the queue's length) but not against the coordinator-wide budget, where they
would be counted once per client for memory that exists once. They are written to the socket
as they are (`FlowControlledWebSocket.send_shared`): a thousand connections sending the same
model hold references to it, in this queue and in their transports' buffers, not copies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from starlette.websockets import WebSocket

from coordinator.protocol.chunking import Outgoing, SharedPiece
from coordinator.protocol.close_codes import Close, reason_for
from coordinator.server.limits import ConnectionGate
from coordinator.server.metrics import Metrics
from coordinator.server.transport import connection_of


class Outbox:
    """Frames to send, then a close code. Event-loop thread only."""

    def __init__(self, limit: int, gate: ConnectionGate) -> None:
        self.limit = limit
        self.slots = gate.write_slots
        self.bytes = 0
        self.close_code: int | None = None
        self.abandoned = asyncio.Event()  # set when queued frames were dropped: stop writing at once
        self._gate = gate
        self._frames: deque[Outgoing] = deque()
        self._ready = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None  # cancelled when the queue is dropped, to stop a send
        self.stopped_writer = False  # this outbox cancelled it (any other cancel is obeyed)

    def put(self, frame: Outgoing) -> None:
        """Queue a frame; over the limit the queue is dropped and the connection closes with 4003."""
        if self.close_code is not None:
            return
        if self.bytes + len(frame) > self.limit:
            self.close(Close.TOO_SLOW, discard=True)
            return
        self._frames.append(frame)
        self._count(len(frame), shared=isinstance(frame, SharedPiece))
        self._ready.set()

    def close(self, code: int, *, discard: bool = False) -> None:
        """Close after the queued frames (or at once, dropping them, with `discard`); the first close wins."""
        if self.close_code is not None:
            return
        self.close_code = code
        if discard:
            self.release()
            self.abandoned.set()
            if self.writer is not None and self.writer is not asyncio.current_task():
                # A send to a client that does not read never finishes: stop it where it waits.
                self.stopped_writer = self.writer.cancel()
        self._ready.set()

    def release(self) -> None:
        """Forget whatever is still queued (the connection is over)."""
        while self._frames:
            frame = self._frames.popleft()
            self._count(-len(frame), shared=isinstance(frame, SharedPiece))

    @property
    def next(self) -> Outgoing | None:
        """The frame `get` would return now, if any."""
        return self._frames[0] if self._frames else None

    async def get(self) -> Outgoing | int:
        """The next frame, or the close code once every frame is out."""
        while not self._frames and self.close_code is None:
            self._ready.clear()
            await self._ready.wait()
        if self._frames:
            frame = self._frames.popleft()
            self._count(-len(frame), shared=isinstance(frame, SharedPiece))
            return frame
        assert self.close_code is not None
        return self.close_code

    def _count(self, n: int, *, shared: bool) -> None:
        self.bytes += n
        if not shared:  # a broadcast's frames exist once, whoever queues them: not this connection's memory
            self._gate.buffered += n


async def write(ws: WebSocket, outbox: Outbox, metrics: Metrics) -> None:
    """The only task that sends on this socket, until the outbox's close code, which it sends.

    A broadcast's pieces are written under one of the coordinator's write slots (`write_slots`),
    held while this connection has pieces to write and room to write them. Dropping the queue
    (`Outbox.close(..., discard=True)`) cancels this task wherever it waits; it then goes
    straight to the close. The send is awaited in this task, not raced against the drop in tasks
    of its own: at 10,000 connections two tasks and an `asyncio.wait` per frame, heartbeats
    included, were 29% of the coordinator's time.
    """
    task = asyncio.current_task()
    assert task is not None
    connection = connection_of(ws.scope)
    slot = outbox.slots.writer()
    outbox.writer = task
    try:
        while True:
            if not isinstance(outbox.next, SharedPiece):
                slot.release()  # nothing of a broadcast to write right now: let another connection write
            if isinstance(item := await outbox.get(), int):
                break
            if isinstance(item, SharedPiece) and connection is not None:
                await slot.send(connection, item)
            else:
                await ws.send_bytes(bytes(item))
            metrics.bytes_out.inc(len(item))
            del item  # a broadcast's last piece would keep its round's weights alive while the queue is empty
    except asyncio.CancelledError:
        if not outbox.stopped_writer or task.uncancel() > 0:
            raise  # cancelled from outside, not (only) by the drop
    finally:
        outbox.writer = None
        slot.release()
    code = outbox.close_code or Close.SERVER_ERROR
    with contextlib.suppress(RuntimeError, OSError):  # already closed by the peer
        await ws.close(code, reason_for(code))
