"""How much of what clients send the coordinator holds at once, across all connections.

When a round's cohort answers together, every connection is in the middle of a model-sized
upload at the same moment: read as fast as it arrives, a thousand uploads sit in the
process together (partial frames in the WebSocket parser, whole messages waiting for their
connection's turn on the event loop), a thousand models of memory, although the grid folds
each one in a millisecond once it has it. TCP can hold them instead: `InboundBudget`
counts the bytes each connection holds (a frame under way with some of what its header
announced: see `FlowControlledWebSocket._account`) and, above `limit`, *parks* connections (their
transports stop reading, so their data waits in the kernel and in the client) until what
is held drains; then parked connections resume, one per drain, first parked first. One
reader is never parked: if every connection holding data were parked, none could finish
its message and the budget would never drain.

Parking after the fact still costs each waiting upload the socket read that took it over
the limit: up to 256 KiB under uvloop, a quarter of a gigabyte for a thousand clients.
So under *pressure* (from half the limit held until a quarter, with nobody waiting) the
budget goes first: every idle connection (holding nothing) is *gated* before its next
read. A gated transport does not read; a `Watcher` reports when its socket has data,
and the connection is then *ready*, and admitted to read when there is room for one
read. An idle socket costs nothing while gated; a heartbeat makes it ready, it is read,
and it is gated again. So what the process holds is the budget and a read, however many
clients answer at once.

The trade-off is the operator's (`--max-receiving-bytes`): a small budget keeps a round's
memory near one model however many clients answer at once; a large one lets many slow
uploads progress together.

Event-loop thread only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

SMALL_BYTES = 8 * 1024  # heartbeats, errors and evaluate results never wait for a turn
READ_BYTES = 256 * 1024  # the most one socket read hands over (uvloop's read buffer)


class Reader(Protocol):
    """A connection as the budget sees it."""

    def park(self) -> None:
        """Stop reading from the socket."""
        ...

    def unpark(self) -> None:
        """Read from the socket again."""
        ...

    def fileno(self) -> int:
        """The socket's descriptor, for a `Watcher`; -1 once it is closing."""
        ...


class Watcher(Protocol):
    """Tells the budget when a gated connection's socket has something to read."""

    def watch(self, reader: Reader, readable: Callable[[Reader], None]) -> bool:
        """Call `readable(reader)` once, when its socket has data; False if it cannot watch it."""
        ...

    def unwatch(self, reader: Reader) -> None:
        """Stop watching `reader` (no report follows)."""
        ...

    def ready_now(self) -> list[Reader]:
        """The watched readers readable now, not yet reported; they are no longer watched."""
        ...


class InboundBudget:
    def __init__(self, limit: int, watcher: Watcher | None = None) -> None:
        self.limit = limit
        self.total = 0
        self.watcher = watcher
        self._held: dict[Reader, int] = {}
        self._parked: deque[Reader] = deque()
        self._active = 0  # readers not parked that hold more than SMALL_BYTES
        self.pressure = False
        self._gated: set[Reader] = set()  # idle, not reading, watched
        self._ready: deque[Reader] = deque()  # gated readers whose socket has data, waiting for room
        self._admitted: set[Reader] = set()  # let in to read, nothing counted from them yet

    def parked(self, reader: Reader) -> bool:
        return reader in self._parked

    def held_back(self, reader: Reader) -> bool:
        """True while `reader` has data that the budget keeps unread: its silence is not the client's."""
        return reader in self._parked or reader in self._ready

    def hold(self, reader: Reader, held: int) -> None:
        """`reader` now holds `held` bytes; parks it, or wakes parked readers, as the total allows."""
        self._admitted.discard(reader)
        old = self._held.get(reader, 0)
        self._held[reader] = held
        self.total += held - old
        if not self.parked(reader):
            self._active += (held > SMALL_BYTES) - (old > SMALL_BYTES)
            if held > old and held > SMALL_BYTES and self.total > self.limit and self._active > 1:
                self._park(reader)
        if self.watcher is not None and not self.pressure and self.total > self.limit // 2:
            self._press()
        if held == 0 and self.pressure:
            self._gate(reader)
        if held < old:
            self._wake()

    def readable(self, reader: Reader) -> None:
        """The watcher's report: gated `reader` has data (or its peer closed)."""
        if reader in self._gated:
            self._gated.discard(reader)
            self._ready.append(reader)
            self._wake()

    def forget(self, reader: Reader) -> None:
        """The connection is gone: what it held is released, and it is never woken."""
        held = self._held.pop(reader, 0)
        self.total -= held
        if reader in self._parked:
            self._parked.remove(reader)
        else:
            self._active -= held > SMALL_BYTES
        if reader in self._gated:
            self._gated.discard(reader)
            if self.watcher is not None:
                self.watcher.unwatch(reader)
        if reader in self._ready:
            self._ready.remove(reader)
        self._admitted.discard(reader)
        self._wake()

    def _park(self, reader: Reader) -> None:
        self._active -= self._held[reader] > SMALL_BYTES
        self._parked.append(reader)
        reader.park()

    def _press(self) -> None:
        self.pressure = True
        for reader, held in self._held.items():
            if held == 0 and reader not in self._admitted:
                self._gate(reader)

    def _gate(self, reader: Reader) -> None:
        if reader in self._gated or reader in self._ready or self.watcher is None:
            return
        reader.park()
        if self.watcher.watch(reader, self.readable):
            self._gated.add(reader)
        else:
            reader.unpark()

    def _wake(self) -> None:
        # One at a time: a woken reader's message arrives only after this returns, so the total cannot tell
        # how many to wake. Every drain (a message taken, a connection gone) wakes the next.
        if self._parked and (self.total <= self.limit or self._active == 0):
            reader = self._parked.popleft()
            self._active += self._held.get(reader, 0) > SMALL_BYTES
            reader.unpark()
            return
        self._admit()
        if self.pressure and not (self._parked or self._ready or self._admitted) and self.total <= self.limit // 4:
            # Before every gated reader reads again, those with data already waiting queue up instead.
            late = [r for r in self.watcher.ready_now() if r in self._gated] if self.watcher is not None else []
            if not late:
                self._release()
            self._gated.difference_update(late)
            self._ready.extend(late)
            self._admit()

    def _admit(self) -> None:
        """Ready readers go in while there is room for each one's first read, or when nobody is reading."""
        while self._ready and (
            self.total + READ_BYTES * (len(self._admitted) + 1) <= self.limit or self._active + len(self._admitted) == 0
        ):
            reader = self._ready.popleft()
            self._admitted.add(reader)
            reader.unpark()

    def _release(self) -> None:
        """Pressure is over: every gated reader reads again."""
        self.pressure = False
        gated, self._gated = self._gated, set()
        for reader in gated:
            if self.watcher is not None:
                self.watcher.unwatch(reader)
            reader.unpark()
