"""Process memory for thousands of long-lived connections and model-sized rounds.

Two things go wrong by default in a coordinator that holds 10,000 idle clients:

* CPython's full garbage collection walks every tracked object. Each connection owns a
  couple of hundred (protocol objects, tasks, futures, dicts), so at 10,000 clients a
  full collection stalls the event loop for over a second, heartbeats and `/healthz`
  included. Connection objects live as long as their client; `GcKeeper` moves the
  survivors into the permanent generation (`gc.freeze`) every `freeze_every` seconds,
  so collections walk only what is new. Frozen objects still die by reference
  counting; only frozen cycles wait, for a refresh that unfreezes everything and collects
  it once: every `refresh_every` seconds, or sooner once the frozen generation has doubled
  (`GcKeeper.tick`). A second is short enough that a burst of joins leaves little for a full
  collection to walk: freezing every 30 s, 10,000 clients joining at once left the
  objects of up to 30 s of joins to the next full collections (/healthz's slowest answer
  180-300 ms, 530 ms at p99 in one run); freezing every second, 17-19 ms, or about 200 ms
  where a refresh (below) came after the joins. Anything a
  round keeps alive for longer than that (every round, in practice) was frozen at 30 s
  too, which is why the grid lets go of model-sized arrays itself
  (`federation.grid._let_go_of_arrays`) rather than leave them to the collector.
* glibc serves large `malloc`s from its heap once its dynamic mmap threshold has grown,
  and keeps the heap after they are freed: a round's model-sized buffers would stay in
  the process's memory for good. The threshold is pinned (buffers of 256 KiB and more are
  mapped, and unmapped when freed) and `trim_heap` hands free heap back after each round.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
_MMAP_THRESHOLD = 256 * 1024


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc only


_LIBC = _libc()


def pin_mmap_threshold() -> bool:
    """Make large buffers mmap'ed, so freeing them returns memory to the OS; False where not glibc."""
    return _LIBC is not None and bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD))


def trim_heap() -> bool:
    """Give free heap memory back to the OS (after a round); False where not glibc or nothing was freed."""
    return _LIBC is not None and bool(_LIBC.malloc_trim(0))


class GcKeeper:
    """Keeps long-lived objects out of the collector's way: see the module's docstring."""

    def __init__(self, freeze_every: float = 1.0, refresh_every: float = 1800.0, measure_every: float = 30.0) -> None:
        self.freeze_every = freeze_every
        self.refresh_every = refresh_every
        self.measure_every = measure_every
        self.last_refresh = self.last_measure = time.monotonic()
        self.frozen_at_refresh = 0

    def start(self) -> None:
        """Freeze what startup created (modules, torch, the app): it lives as long as the process."""
        gc.collect()
        gc.freeze()
        self.frozen_at_refresh = gc.get_freeze_count()

    def tick(self) -> None:
        """Freeze the objects that survived since the last tick; now and then, collect everything once.

        A refresh comes every `refresh_every` seconds, and sooner once the frozen generation has
        doubled since the last one (looked at every `measure_every` seconds: counting walks it).
        Frozen objects that became garbage cycles wait for a refresh, so without the second rule
        clients that connect for a few seconds and leave, over and over, could pile up their
        connections' cycles for the whole `refresh_every`; with it, frozen garbage stays under the
        frozen live objects, as CPython's own full collections keep theirs in proportion.
        """
        now = time.monotonic()
        due = now - self.last_refresh >= self.refresh_every
        if not due and now - self.last_measure >= self.measure_every:
            self.last_measure = now
            due = gc.get_freeze_count() > 2 * self.frozen_at_refresh
        if due:
            started = time.perf_counter()
            gc.unfreeze()
            gc.collect()
            self.last_refresh = self.last_measure = time.monotonic()
            log.info("full garbage collection: %.0f ms", 1000 * (time.perf_counter() - started))
        gc.freeze()
        if due:
            self.frozen_at_refresh = gc.get_freeze_count()

    async def run(self) -> None:
        """Tick every `freeze_every` seconds, for as long as the event loop runs."""
        while True:
            await asyncio.sleep(self.freeze_every)
            self.tick()
