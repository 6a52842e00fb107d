"""The inbound budget: above its limit, connections stop being read until what is held drains."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from types import SimpleNamespace

from coordinator.server.inbound import READ_BYTES, SMALL_BYTES, InboundBudget, Reader
from coordinator.server.payloads import SPARES, Payload
from coordinator.server.transport import FlowControlledWebSocket

MB = 1 << 20


class FakeReader:
    def __init__(self, name: str) -> None:
        self.name = name
        self.reading = True

    def park(self) -> None:
        self.reading = False

    def unpark(self) -> None:
        self.reading = True

    def fileno(self) -> int:
        return 3

    def __repr__(self) -> str:
        return self.name


def test_readers_past_the_limit_are_parked_and_woken_one_per_drain_in_order() -> None:
    budget = InboundBudget(limit=10 * MB)
    a, b, c, d = (FakeReader(n) for n in "abcd")
    budget.hold(a, 6 * MB)
    budget.hold(b, 3 * MB)
    assert a.reading and b.reading
    budget.hold(c, 2 * MB)  # over the limit: c waits
    budget.hold(d, 1 * MB)
    assert (c.reading, d.reading) == (False, False)
    assert budget.total == 12 * MB
    budget.hold(a, 0)  # a's message was taken: one reader wakes, the first parked
    assert c.reading and not d.reading
    budget.hold(b, 0)
    assert d.reading


def test_small_messages_are_never_parked() -> None:
    budget = InboundBudget(limit=MB)
    big, small = FakeReader("big"), FakeReader("small")
    budget.hold(big, 2 * MB)
    budget.hold(small, SMALL_BYTES)
    assert small.reading


def test_the_last_reader_holding_data_is_never_parked_so_the_budget_always_drains() -> None:
    budget = InboundBudget(limit=MB)
    a, b = FakeReader("a"), FakeReader("b")
    budget.hold(a, 4 * MB)  # alone and over the limit: it must be able to finish its message
    assert a.reading
    budget.hold(b, 2 * MB)
    assert not b.reading
    budget.forget(a)  # a's connection is gone
    assert b.reading and budget.total == 2 * MB


def test_a_parked_reader_that_goes_away_is_forgotten() -> None:
    budget = InboundBudget(limit=MB)
    a, b, c = FakeReader("a"), FakeReader("b"), FakeReader("c")
    budget.hold(a, 2 * MB)
    budget.hold(b, 2 * MB)
    budget.hold(c, 2 * MB)
    budget.forget(b)  # b was parked: it is not woken, and what it held no longer counts
    assert not b.reading and not budget.parked(b) and budget.total == 4 * MB
    budget.hold(a, 0)
    assert c.reading and budget.total == 2 * MB


class FakeWatcher:
    """Sockets become readable when the test says so."""

    def __init__(self, refuse: bool = False) -> None:
        self.watched: dict[Reader, Callable[[Reader], None]] = {}
        self.refuse = refuse

    def watch(self, reader: Reader, readable: Callable[[Reader], None]) -> bool:
        if self.refuse:
            return False
        self.watched[reader] = readable
        return True

    def unwatch(self, reader: Reader) -> None:
        self.watched.pop(reader, None)

    def data_arrives(self, reader: Reader) -> None:
        self.watched.pop(reader)(reader)

    def ready_now(self) -> list[Reader]:
        return []


def test_under_pressure_idle_readers_are_gated_before_they_read_and_let_in_when_there_is_room() -> None:
    watcher = FakeWatcher()
    budget = InboundBudget(limit=4 * MB, watcher=watcher)
    idle = [FakeReader(f"idle{i}") for i in range(4)]
    for r in idle:
        budget.hold(r, 100)  # a hello, say
        budget.hold(r, 0)  # taken: idle
    assert all(r.reading for r in idle) and not budget.pressure
    uploader = FakeReader("uploader")
    budget.hold(uploader, 3 * MB)  # past half the limit: pressure
    assert budget.pressure and uploader.reading
    assert not any(r.reading for r in idle) and set(watcher.watched) == set(idle)
    budget.hold(uploader, 4 * MB - READ_BYTES + 1)  # less room than one read
    watcher.data_arrives(idle[0])  # its upload begins
    assert budget.held_back(idle[0]) and not idle[0].reading
    budget.hold(uploader, 0)  # the upload was taken: room for a read
    assert idle[0].reading and not budget.held_back(idle[0])
    assert budget.pressure  # one admitted reader not yet counted
    budget.hold(idle[0], 2 * MB)
    assert uploader in watcher.watched and not uploader.reading  # idle now, so gated
    budget.hold(idle[0], 0)  # drained: pressure is over, everyone reads
    assert not budget.pressure and all(r.reading for r in [*idle, uploader]) and watcher.watched == {}


def test_a_heartbeat_is_read_and_its_reader_gated_again() -> None:
    watcher = FakeWatcher()
    budget = InboundBudget(limit=4 * MB, watcher=watcher)
    a, b = FakeReader("a"), FakeReader("b")
    budget.hold(a, 0)
    budget.hold(b, 3 * MB)
    watcher.data_arrives(a)
    assert a.reading  # 3 MB + one read fits in 4 MB
    budget.hold(a, 60)
    budget.hold(a, 0)
    assert not a.reading and a in watcher.watched


def test_pressure_ends_when_what_is_held_drains_and_everyone_reads_again() -> None:
    watcher = FakeWatcher()
    budget = InboundBudget(limit=4 * MB, watcher=watcher)
    idle, uploader = FakeReader("idle"), FakeReader("uploader")
    budget.hold(idle, 0)
    budget.hold(uploader, 3 * MB)
    assert not idle.reading
    budget.hold(uploader, 0)
    assert not budget.pressure and idle.reading and uploader.reading and watcher.watched == {}


def test_without_a_watcher_or_when_it_cannot_watch_nobody_is_gated() -> None:
    for watcher in (None, FakeWatcher(refuse=True)):
        budget = InboundBudget(limit=4 * MB, watcher=watcher)
        idle, uploader = FakeReader("idle"), FakeReader("uploader")
        budget.hold(idle, 0)
        budget.hold(uploader, 3 * MB)
        assert idle.reading


def test_gated_and_ready_readers_that_go_away_are_forgotten() -> None:
    watcher = FakeWatcher()
    budget = InboundBudget(limit=4 * MB, watcher=watcher)
    gated, ready, uploader = FakeReader("gated"), FakeReader("ready"), FakeReader("uploader")
    budget.hold(gated, 0)
    budget.hold(ready, 0)
    budget.hold(uploader, 4 * MB)
    watcher.data_arrives(ready)
    budget.forget(gated)
    budget.forget(ready)
    assert watcher.watched == {} and not budget.held_back(ready)
    budget.hold(uploader, 0)
    assert not gated.reading and not ready.reading and not budget.pressure


class ModelReader(FakeReader):
    """A connection as the transport runs it: reads while neither the budget nor a queued message pauses it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.paused_by_message = False  # uvicorn's read_paused: a whole message waits for the app
        self.stream: list[int] = []  # sizes of the messages its client is sending, in order
        self.sent = 0  # bytes of stream[0] read so far
        self.partial = 0
        self.queue: list[int] = []

    def can_read(self) -> bool:
        return self.reading and not self.paused_by_message and bool(self.stream)

    def held(self) -> int:
        return self.partial + sum(self.queue)


class ModelWatcher(FakeWatcher):
    def ready_now(self) -> list[Reader]:
        ready: list[Reader] = [r for r in self.watched if isinstance(r, ModelReader) and r.stream]
        for r in ready:
            self.watched.pop(r)
        return ready


def test_a_random_run_of_uploads_and_heartbeats_never_stalls_the_budget() -> None:
    # Liveness: whenever a client has bytes in flight or the app has a message waiting, something can move.
    model = 6 * MB
    for seed in range(6):
        rnd = random.Random(seed)
        watcher = ModelWatcher()
        budget = InboundBudget(limit=2 * model, watcher=watcher)
        readers = [ModelReader(f"r{i}") for i in range(40)]
        for step in range(6_000):
            moves: list[tuple[str, ModelReader]] = []
            for r in readers:
                moves += [("read", r)] if r.can_read() else []
                moves += [("take", r)] if r.queue else []
            moves += [("readable", r) for r in watcher.watched if isinstance(r, ModelReader) and r.stream]
            pending = [r for r in readers if r.stream or r.queue]
            assert moves or not pending, f"seed {seed}, step {step}: {pending[:3]} wait and nothing can move"
            moves += [("send", r) for r in readers if len(r.stream) < 2]
            kind, r = rnd.choice(moves)
            if kind == "send":
                r.stream.append(model if rnd.random() < 0.3 else 40)  # an upload, or a heartbeat
            elif kind == "read":
                n = READ_BYTES
                while n and r.stream:
                    take = min(n, r.stream[0] - r.sent)
                    r.sent, r.partial, n = r.sent + take, r.partial + take, n - take
                    if r.sent == r.stream[0]:
                        r.queue.append(r.stream.pop(0))
                        r.partial, r.sent, r.paused_by_message = r.partial - r.sent, 0, True
                budget.hold(r, r.held())
            elif kind == "take":
                r.queue.pop(0)
                r.paused_by_message = r.paused_by_message and bool(r.queue)
                budget.hold(r, r.held())
            else:
                watcher.data_arrives(r)


def test_a_message_counts_against_the_budget_until_the_app_asks_for_the_next() -> None:
    # A delta being decoded, checked and folded is memory as much as one being received: were it let go of
    # when the app takes it, every connection's next upload could be read while it is still held.
    held: list[int] = []
    ws = object.__new__(FlowControlledWebSocket)
    ws.inbound = SimpleNamespace(hold=lambda reader, n: held.append(n))  # type: ignore[assignment]
    ws._reader = SimpleNamespace(counted=lambda headroom: 0)  # type: ignore[assignment]
    ws.bytes = bytearray()
    ws.read_paused = False
    ws.transport = SimpleNamespace(resume_reading=lambda: None)  # type: ignore[assignment]

    async def exchange() -> None:
        ws.queue = asyncio.Queue()
        for size in (5 * MB, 3 * MB):
            ws.queue.put_nowait({"type": "websocket.receive", "bytes": b"\0" * size})
            ws._queued += size
        await ws.receive()
        assert held[-1] == 8 * MB  # the app has the first, the second waits
        await ws.receive()
        assert held[-2:] == [3 * MB, 3 * MB]  # the first was let go of only when the app asked again
        ws.queue.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await ws.receive()
        assert held[-2:] == [0, 0]

    asyncio.run(exchange())


def test_a_large_upload_is_kept_for_the_next_within_half_the_budget_and_taken_only_where_it_fits() -> None:
    # Large spares sit outside what the budget counts until taken, so they are capped at half of it.
    ws = object.__new__(FlowControlledWebSocket)
    ws._reader = SimpleNamespace(counted=lambda headroom: 0)  # type: ignore[assignment]
    ws.bytes = bytearray()
    ws.read_paused = False
    ws.transport = SimpleNamespace(resume_reading=lambda: None)  # type: ignore[assignment]

    async def exchange(limit: int) -> int:
        ws.inbound = SimpleNamespace(hold=lambda reader, n: None, limit=limit, total=0)  # type: ignore[assignment]
        ws.queue = asyncio.Queue()
        ws.queue.put_nowait({"type": "websocket.receive", "bytes": Payload.of_size(2 * MB)})  # type: ignore[typeddict-item]
        ws.queue.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await ws.receive()  # the app folds the upload and lets go of it...
        await ws.receive()  # ...and asks for the next message
        return SPARES.bytes

    SPARES.clear()
    try:
        assert asyncio.run(exchange(limit=3 * MB)) == 0
        assert asyncio.run(exchange(limit=4 * MB)) == 2 * MB
        assert ws._room(4 * MB) and not ws._room(4 * MB + 1)
        ws.inbound.total = 1  # type: ignore[union-attr]
        assert not ws._room(4 * MB)
        ws.inbound = None
        assert not ws._room(1)
    finally:
        SPARES.clear()
