"""Process memory housekeeping: long-lived objects leave the collector's way; freed rounds go back to the OS."""

from __future__ import annotations

import gc
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array

from coordinator.federation.run_loop import RunLoop
from coordinator.federation.status import RunStatus
from coordinator.models.spec import load_spec
from coordinator.persistence.store import RoundRecord, Store
from coordinator.protocol import Result, Task, encode_tensors
from coordinator.server.memory import GcKeeper, pin_mmap_threshold, trim_heap
from coordinator.settings import Settings
from tests.fake_nodes import FakeNodes


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


class Connection:
    """Stands for a connection's objects: a cycle, as asyncio's tasks and protocols make."""

    def __init__(self) -> None:
        self.me = self


def _watched(n: int) -> tuple[list[Connection], list[int]]:
    """`n` connection-like cycles, and a list that gains an item as each is collected."""
    collected: list[int] = []

    class Watched(Connection):
        def __del__(self) -> None:
            collected.append(1)

    return [Watched() for _ in range(n)], collected


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
    dropped, collected = _watched(10)
    keeper.tick()
    del dropped
    gc.collect()
    assert collected == []  # frozen cycles wait...
    keeper.refresh_every = 0
    keeper.tick()
    assert len(collected) == 10  # ...until the refresh


def test_a_frozen_generation_that_doubled_is_refreshed_before_its_time() -> None:
    # Clients that connect for a few seconds and leave, over and over, must not pile up frozen cycles
    # for the whole refresh_every: the keeper refreshes once the frozen generation has doubled.
    keeper = GcKeeper(refresh_every=3600, measure_every=0)
    keeper.start()
    dropped, collected = _watched(10)
    keeper.tick()
    del dropped
    keeper.tick()
    assert collected == []  # not doubled: the frozen cycles wait
    keeper.frozen_at_refresh = gc.get_freeze_count() // 2 - 1  # as if the last refresh had left half as many
    keeper.tick()
    assert len(collected) == 10
    assert keeper.frozen_at_refresh == gc.get_freeze_count()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_heap_trimming_is_available_on_glibc() -> None:
    assert pin_mmap_threshold()
    trim_heap()  # True or False (nothing to give back) are both fine; it must not fail


def test_a_run_holds_one_global_model_between_rounds(tmp_path: Path) -> None:
    # Flower's Strategy.start keeps its initial record to the end, and its records otherwise wait for the cyclic
    # collector: with the collector off, as between its passes, a round must still leave one model behind.
    shapes = load_spec("mnist-mlp").wire_shapes()
    biggest = max(shapes, key=lambda n: math.prod(shapes[n]))

    def answer(node_id: int, task: Task) -> Result:
        delta = {n: np.full(s, 0.001 * node_id, np.float32) for n, s in shapes.items()}
        return Result(task.task_id, 10, {"train_loss": 0.5}, encode_tensors(delta))

    def arrays_alive() -> int:
        return sum(isinstance(o, Array) and o.shape == shapes[biggest] for o in gc.get_objects())

    class Sink:
        def __init__(self) -> None:
            self.alive: list[int] = []

        def on_round(self, run_id: str, record: RoundRecord, checkpoint: Sequence[bytes | memoryview]) -> None:
            self.alive.append(arrays_alive())

        def on_end(self, run_id: str, state: str, message: str) -> None:
            pass

    store = Store(f"sqlite:///{tmp_path}/run.db")
    nodes = FakeNodes([1, 2, 3], answer)
    settings = Settings(model="mnist-mlp", rounds=4, min_clients=3, round_timeout=10.0, evaluate_every=0)
    sink = Sink()
    loop = RunLoop(settings, store, nodes, RunStatus(), sink)
    nodes.grid = loop.grid
    gc.collect()
    before = arrays_alive()  # what earlier tests in this process left
    gc.disable()
    try:
        loop.run_to_end()
    finally:
        gc.enable()
        store.close()
    assert len(sink.alive) == 4
    assert all(n - before <= 1 for n in sink.alive), (before, sink.alive)  # 2 each round without the release
