"""Received frame payloads handed over by the WebSocket parser as they are, and unmasked in place.

websockets' parser collects a frame in its read buffer, growing it read by read, then copies
the payload out of it (`buffer[:n]`) and unmasks that copy into a third buffer (a client's
frames are always masked). For a model-sized upload that is three copies at the moment the
frame completes, two of them thrown away at once, and a trail of reallocations before: with
a thousand clients answering a round, the copies, not the uploads, set the coordinator's peak
memory.

`PayloadReader` receives a large payload into a `Payload` of its exact size instead, and
hands that over; nothing else references it, so `apply_mask` unmasks it in place. A frame's
payload then costs its own size, once, and starts where an allocation starts, so tensors read
from it in place are aligned.

Event-loop thread only, like the parser it serves.
"""

from __future__ import annotations

import asyncio
import mmap
import sys
import threading
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import websockets.frames
from websockets.streams import StreamReader

OWN_ABOVE_BYTES = 64 * 1024  # smaller payloads (headers, heartbeats) are copied: handing them over saves nothing
POPULATE_BYTES = 1024 * 1024  # what the budget counts of a payload before it arrives (transport's headroom)
_POPULATE: int = getattr(mmap, "MAP_POPULATE", 0)  # Linux only
SPARE_BYTES = 64 * 1024 * 1024  # small payloads kept for reuse, in all (see `Spares`)
SPARE_SECONDS = 1.0  # spares go back to the system once none was taken for this long


class Payload(mmap.mmap):
    """A frame's payload in memory of its own, which only the parser's caller references.

    Anonymous memory, mapped at the payload's size: a large payload's pages are taken as bytes
    arrive, and all of it goes back to the system when the payload is dropped. It may be unmasked
    in place.

    Taking a page costs a fault, and on a virtual machine faults are slow: filling fresh pages of
    Python's default mapping (shared) ran at 1.1 GB/s here, 5.6 ms for each mnist-cnn delta, more
    than the rest of its handling; a private mapping, at 1.9 GB/s. (Huge pages reached 8.8 GB/s
    and made a K = 1,000 round 15% faster, but every upload parked mid-frame then held a 2 MiB
    page: 0.8 models more at the round's peak.)

    A payload of up to `POPULATE_BYTES` is counted whole by the inbound budget from its header on,
    so its pages are all taken at once, in one call (`MAP_POPULATE`): 2.2 times faster than one
    fault each, for a mnist-mlp delta. Better still, a payload the app is done with is kept
    (`SPARES`) and the next one of its size is received into it, its pages taken already.
    """

    reused = False  # a spare, received into before: all of its pages are resident

    @classmethod
    def of_size(cls, n: int, *, spare: bool = True) -> Payload:
        """A payload of `n` bytes: a spare one of that size if `spare` and there is one, else a new mapping."""
        kept = SPARES.take(n) if spare else None
        if kept is not None:
            return kept
        populate = _POPULATE if n <= POPULATE_BYTES else 0
        return cls(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)


class Spares:
    """Payloads the app is done with, kept (up to `limit` bytes in all) to receive the next ones into.

    Every client of a run sends deltas of the same size, so the next payload of that size comes
    soon. Received into a spare, it takes no page faults: at K = 100 on mnist-mlp, making each
    payload's pages took 19% of the coordinator's time (py-spy), and on mnist-cnn filling fresh
    pages was the largest single cost of a round. A spare's pages are all resident from the
    start, so the inbound budget must count it whole. A payload of up to `POPULATE_BYTES` is
    counted whole from its header on anyway. A larger one is counted as it arrives, so it is
    kept only within `cap` (the caller's share of its budget) and received into a spare only
    when the budget has room to count it whole (see `PayloadReader.room`).

    A small payload is made only when no spare of its size is left, so small spares never
    outnumber the payloads the budget let in at once: they add nothing to a round's peak beyond
    what the budget already allowed. Large ones add at most `cap`. They serve a round's burst of
    replies: once none was taken for `SPARE_SECONDS`, all go back to the system, so memory
    between rounds is as without them.

    A spare is whole-overwritten before it is handed over again (the reader hands over a payload
    only once all of it has arrived), so nothing of one client's payload reaches another's.
    """

    def __init__(self, limit: int, idle_seconds: float = SPARE_SECONDS) -> None:
        self.limit = limit
        self.idle_seconds = idle_seconds
        self.bytes = 0
        self._by_size: dict[int, list[Payload]] = {}
        self._lock = threading.Lock()  # one event loop per server, but tests run several in one process
        self._taken = False  # since the last `_expire`
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_loop: asyncio.AbstractEventLoop | None = None  # (tests run servers one after another)

    def take(self, n: int) -> Payload | None:
        """A spare of exactly `n` bytes, no longer kept, or None."""
        with self._lock:
            kept = self._by_size.get(n)
            if not kept:
                return None
            self.bytes -= n
            self._taken = True
            payload = kept.pop()
        payload.reused = True
        return payload

    def give(self, payload: Payload, cap: int = 0) -> bool:
        """Keep `payload` if there is room and nothing but the caller's one reference holds it.

        Room: the spares stay within `limit` in all, and with a payload larger than
        `POPULATE_BYTES`, within `cap` too. The caller passes its only reference, and drops it
        after: a payload still referenced elsewhere (a numpy view, a decoded tensor) is in use,
        and is left alone. Called on an event loop, which then lets the spares go once they are
        no longer taken.
        """
        # Three references: the caller's, this parameter, and getrefcount's own argument.
        if payload.closed or sys.getrefcount(payload) > 3:
            return False
        with self._lock:
            bound = self.limit if len(payload) <= POPULATE_BYTES else min(self.limit, cap)
            if self.bytes + len(payload) > bound:
                return False
            self._by_size.setdefault(len(payload), []).append(payload)
            self.bytes += len(payload)
            loop = asyncio.get_running_loop()
            before = self._expiry_loop
            if self._expiry is None or (before is not None and before is not loop and before.is_closed()):
                self._taken = False
                self._expiry, self._expiry_loop = loop.call_later(self.idle_seconds, self._expire), loop
            return True

    def clear(self) -> None:
        """Give every spare back to the system."""
        with self._lock:
            self._by_size.clear()
            self.bytes = 0

    def _expire(self) -> None:
        with self._lock:
            self._expiry = None
            if self._taken and self.bytes:  # still in use: look again later
                self._taken = False
                self._expiry = asyncio.get_running_loop().call_later(self.idle_seconds, self._expire)
                return
            self._by_size.clear()
            self.bytes = 0


SPARES = Spares(SPARE_BYTES)


class PayloadReader(StreamReader):
    """websockets' `StreamReader`, receiving each large payload into a buffer of its own, its exact size.

    Once a frame's header has announced a large payload, the bytes that arrive go straight into a
    `Payload` allocated once, at its full length, and handed over when it is full: no copy is made,
    and no buffer grows read by read (reallocations that leave a trail of freed blocks, which a
    thousand uploads turn into memory the allocator keeps). Its pages are taken as bytes arrive
    (`pending`); `expected` counts the whole payload from the moment its header announces it.

    A large payload is received into a spare (see `Spares`) only if `room` says the budget can
    count all of it now; the reader's owner sets `room`. Such a payload counts whole from the
    start, since its pages are.
    """

    _payload: Payload | None = None  # the large payload being received
    _filled = 0  # how much of it has arrived

    @staticmethod
    def room(n: int) -> bool:
        """Whether `n` bytes more, resident at once, fit what this reader's budget allows now."""
        return False

    @property
    def pending(self) -> int:
        """Bytes this reader holds: unparsed input, and what arrived of a payload under way."""
        return len(self.buffer) + self._filled

    @property
    def expected(self) -> int:
        """Bytes this reader will hold before it can hand anything over: a payload under way counts whole."""
        return len(self.buffer) + (len(self._payload) if self._payload is not None else 0)

    def counted(self, headroom: int) -> int:
        """What arrived, and up to `headroom` bytes more of a payload under way (what a budget charges).

        A payload received into a spare counts whole: its pages are resident already."""
        if self._payload is not None and self._payload.reused:
            return self.expected
        return self.pending + min(self.expected - self.pending, headroom)

    def read_exact(self, n: int) -> Generator[None, None, Any]:
        """Read `n` bytes: a copy of them if `n` is small, else a `Payload` they were received into."""
        if n < OWN_ABOVE_BYTES:
            return (yield from super().read_exact(n))
        payload = Payload.of_size(n, spare=n <= POPULATE_BYTES or self.room(n))
        taken = min(len(self.buffer), n)
        with memoryview(self.buffer) as view, memoryview(payload) as into:
            into[:taken] = view[:taken]
        del self.buffer[:taken]
        self._payload, self._filled = payload, taken
        try:
            while self._filled < n:
                if self.eof:
                    raise EOFError(f"stream ends after {self._filled} bytes, expected {n} bytes")
                yield
        finally:
            self._payload, self._filled = None, 0
        return payload

    def feed_data(self, data: bytes | bytearray) -> None:
        """Take `data` that arrived: into the payload under way first, the rest into the buffer."""
        payload = self._payload
        if payload is not None and self._filled < len(payload) and not self.eof:
            take = min(len(payload) - self._filled, len(data))
            with memoryview(data) as view, memoryview(payload) as into:
                into[self._filled : self._filled + take] = view[:take]
                self._filled += take
                if take == len(data):
                    return
                data = bytes(view[take:])
        super().feed_data(data)

    def compact(self) -> None:
        """Let go of the room a consumed front left in the buffer: keep only what is still unread."""
        self.buffer = bytearray(self.buffer)


def take_payloads(reader: StreamReader) -> PayloadReader:
    """Turn a connection's reader into a `PayloadReader`, in place (its parser holds it already)."""
    reader.__class__ = PayloadReader
    assert isinstance(reader, PayloadReader)
    return reader


def unmask_in_place(data: Payload | bytearray, mask: bytes) -> None:
    """XOR `data` with the 4-byte `mask` repeated (RFC 6455 §5.3), in place."""
    whole = len(data) // 4
    if whole:
        words = np.frombuffer(data, np.uint32, whole)
        np.bitwise_xor(words, np.frombuffer(mask, np.uint32)[0], out=words)
        del words  # a live view would forbid resizing the buffer
    for i in range(whole * 4, len(data)):
        data[i] ^= mask[i % 4]


def _install() -> None:
    copying: Callable[[Any, bytes], bytes] = getattr(websockets.frames, "apply_mask")  # noqa: B009 (not exported)

    def apply_mask(data: Any, mask: bytes) -> Any:
        if type(data) is Payload:
            unmask_in_place(data, mask)
            return data
        return copying(data, mask)

    setattr(websockets.frames, "apply_mask", apply_mask)  # noqa: B010 (Frame.parse reads the module's global)


_install()
