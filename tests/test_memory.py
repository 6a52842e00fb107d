"""Process memory housekeeping: long-lived objects leave the collector's way; freed rounds go back to the OS."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from coordinator.server.memory import GcKeeper, pin_mmap_threshold, trim_heap


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


class Connection:
    """Stands for a connection's objects: a cycle, as asyncio's tasks and protocols make."""

    def __init__(self) -> None:
        self.me = self


def test_tick_moves_survivors_out_of_the_collectors_walk() -> None:
    keeper = GcKeeper(refresh_every=3600)
    keeper.start()
    held = [Connection() for _ in range(1000)]
    before = gc.get_freeze_count()
    keeper.tick()
    assert gc.get_freeze_count() >= before + len(held)
    assert not any(gc.is_tracked(c) and c in gc.get_objects(generation=2) for c in held[:5])


def test_a_refresh_collects_frozen_cycles_once_they_are_dropped() -> None:
    keeper = GcKeeper(refresh_every=3600)
    keeper.start()
    collected: list[int] = []

    class Watched(Connection):
        def __del__(self) -> None:
            collected.append(1)

    dropped = [Watched() for _ in range(10)]
    keeper.tick()
    del dropped
    gc.collect()
    assert collected == []  # frozen cycles wait...
    keeper.refresh_every = 0
    keeper.tick()
    assert len(collected) == 10  # ...until the refresh


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_heap_trimming_is_available_on_glibc() -> None:
    assert pin_mmap_threshold()
    trim_heap()  # True or False (nothing to give back) are both fine; it must not fail
