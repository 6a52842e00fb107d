"""Who writes a broadcast into their socket now: a few connections at a time, each a whole stretch of its frame.

A round's task goes to every connection at once, as the same shared pieces (`SharedPiece`).
Two ways of writing them both failed:

* Each connection writing its pieces straight into its socket, without yielding: on loopback
  the kernel takes megabytes per socket, so at K = 3,000 one event-loop turn copied gigabytes
  and the coordinator did not answer HTTP for over 10 s.
* Each connection writing one piece per loop turn, round-robin: fair, but every client then
  finishes receiving at the very end of the broadcast, so no upload can start until every
  download is over. At K = 100 a round took 1.6 to 2 times the bare WebSocket stack's time,
  which overlaps the two.

So a connection takes one of `slots` slots and, while it holds it, writes its pieces straight
into its socket until the socket stops taking data (its transport pauses), its queue has
nothing more to send right now, or it has written `stretch_bytes`; then it hands the slot to
the connection that has waited longest (first come, first served: waiters queue, and are not
woken in vain). Whoever holds a slot writes at most `turn_bytes` in all per event-loop turn,
then waits for the next turn, so the loop answers everything else between. Most clients get
their whole task early, as on the bare stack, and their replies overlap the rest of the
broadcast. A client that reads slowly holds no slot while its socket is full.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from coordinator.protocol.chunking import SharedPiece

SLOTS = 4
STRETCH_BYTES = 4 * 1024 * 1024
TURN_BYTES = 8 * 1024 * 1024  # a few milliseconds of copying into sockets


class SharedPieceSink(Protocol):
    """A connection that can write a shared piece (`FlowControlledWebSocket`)."""

    writable: asyncio.Event

    async def send_shared(self, piece: SharedPiece) -> None: ...


class WriteSlots:
    """The coordinator-wide slots for writing broadcasts (see the module's docstring). Event-loop thread only."""

    def __init__(self, slots: int = SLOTS, stretch_bytes: int = STRETCH_BYTES, turn_bytes: int = TURN_BYTES) -> None:
        if min(slots, stretch_bytes, turn_bytes) < 1:
            raise ValueError("slots, stretch_bytes and turn_bytes must be positive")
        self.stretch_bytes = stretch_bytes
        self.turn_bytes = turn_bytes
        self._free = asyncio.Semaphore(slots)  # first come, first served: a waiter is never overtaken
        self._spent = 0  # bytes written in this loop turn
        self._next_turn: asyncio.Future[None] | None = None  # done when the next turn starts

    async def spend(self, n: int) -> None:
        """Count `n` bytes about to be written in this turn, first waiting for the next turn if this one is full."""
        while self._spent >= self.turn_bytes:
            assert self._next_turn is not None
            await asyncio.shield(self._next_turn)  # one waiter's cancel must not cancel the others' wait
        if self._next_turn is None:
            # Scheduled now, `_turn_over` runs at the start of the next turn: only callbacks already
            # ready run in this one.
            self._next_turn = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._turn_over, self._next_turn)
        self._spent += n

    def _turn_over(self, turn: asyncio.Future[None]) -> None:
        self._spent, self._next_turn = 0, None
        turn.set_result(None)

    def writer(self) -> SlotWriter:
        """One connection's writer of broadcast pieces."""
        return SlotWriter(self)


class SlotWriter:
    """Writes one connection's shared pieces under a slot; `release` when the connection's queue is empty."""

    def __init__(self, slots: WriteSlots) -> None:
        self._slots = slots
        self._held = False
        self._written = 0  # bytes written since the slot was taken

    @property
    def held(self) -> bool:
        return self._held

    async def send(self, sink: SharedPieceSink, piece: SharedPiece) -> None:
        """Write `piece` into `sink`'s socket, first taking a slot if this writer holds none.

        The slot is kept for the next piece, unless the socket is full or the stretch is over.
        Cancelled while it waits for room or a slot, it holds nothing; cancelled while it waits
        for the next turn, it keeps its slot until `release`.
        """
        if self._held and (not sink.writable.is_set() or self._written >= self._slots.stretch_bytes):
            self.release()
        if not self._held:
            await sink.writable.wait()  # room first: a slot is never held by a socket that takes nothing
            await self._slots._free.acquire()
            self._held, self._written = True, 0
        await self._slots.spend(len(piece))
        await sink.send_shared(piece)
        self._written += len(piece)

    def release(self) -> None:
        """Give the slot back, if held (idempotent)."""
        if self._held:
            self._held = False
            self._slots._free.release()
