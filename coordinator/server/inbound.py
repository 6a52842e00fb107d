"""How much of what clients send the coordinator holds at once, across all connections.

When a round's cohort answers together, every connection is in the middle of a model-sized
upload at the same moment: read as fast as it arrives, a thousand uploads sit in the
process together (partial frames in the WebSocket parser, whole messages waiting for their
connection's turn on the event loop), a thousand models of memory, although the grid folds
each one in a millisecond once it has it. TCP can hold them instead: `InboundBudget`
counts the bytes each connection holds and, above `limit`, *parks* connections (their
transports stop reading, so their data waits in the kernel and in the client) until what
is held drains; then parked connections resume, one per drain, first parked first. A connection is parked
after the read that took it over, so each waiting upload holds one socket read (up to 256
KiB under uvloop), not a model.

The trade-off is the operator's (`--max-receiving-bytes`): a small budget keeps a round's
memory near one model however many clients answer at once; a large one lets many slow
uploads progress together. One reader is never parked: if every connection holding data were parked, none could
finish its message and the budget would never drain.

Event-loop thread only.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

SMALL_BYTES = 8 * 1024  # heartbeats, errors and evaluate results never wait for a turn


class Reader(Protocol):
    """A connection as the budget sees it."""

    def park(self) -> None:
        """Stop reading from the socket."""
        ...

    def unpark(self) -> None:
        """Read from the socket again."""
        ...


class InboundBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._held: dict[Reader, int] = {}
        self._parked: deque[Reader] = deque()
        self._active = 0  # readers not parked that hold more than SMALL_BYTES

    def parked(self, reader: Reader) -> bool:
        return reader in self._parked

    def hold(self, reader: Reader, held: int) -> None:
        """`reader` now holds `held` bytes; parks it, or wakes parked readers, as the total allows."""
        old = self._held.get(reader, 0)
        self._held[reader] = held
        self.total += held - old
        if not self.parked(reader):
            self._active += (held > SMALL_BYTES) - (old > SMALL_BYTES)
            if held > old and held > SMALL_BYTES and self.total > self.limit and self._active > 1:
                self._park(reader)
        if held < old:
            self._wake()

    def forget(self, reader: Reader) -> None:
        """The connection is gone: what it held is released, and it is never woken."""
        held = self._held.pop(reader, 0)
        self.total -= held
        if reader in self._parked:
            self._parked.remove(reader)
        else:
            self._active -= held > SMALL_BYTES
        self._wake()

    def _park(self, reader: Reader) -> None:
        self._active -= self._held[reader] > SMALL_BYTES
        self._parked.append(reader)
        reader.park()

    def _wake(self) -> None:
        # One at a time: a woken reader's message arrives only after this returns, so the total cannot tell
        # how many to wake. Every drain (a message taken, a connection gone) wakes the next.
        if self._parked and (self.total <= self.limit or self._active == 0):
            reader = self._parked.popleft()
            self._active += self._held.get(reader, 0) > SMALL_BYTES
            reader.unpark()
