"""Broadcast pieces are written a few connections at a time, each a stretch of its frame, never by a full socket."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.protocol.chunking import SharedFrame, SharedPiece
from coordinator.server.write_slots import WriteSlots

PIECES = SharedFrame(b"head", bytes(10 * 1000), pace_bytes=1000).frames(1000)


class _Sink:
    """A connection whose socket takes `room` pieces, then is full until `drain`."""

    def __init__(self, name: str, log: list[str], room: int = 1000) -> None:
        self.name, self.log, self.room = name, log, room
        self.writable = asyncio.Event()
        self.writable.set()

    async def send_shared(self, piece: SharedPiece) -> None:
        assert self.writable.is_set(), "written while full"
        self.log.append(self.name)
        self.room -= 1
        if self.room == 0:
            self.writable.clear()

    def drain(self, room: int) -> None:
        self.room = room
        self.writable.set()


async def _send_all(slots: WriteSlots, sink: _Sink) -> None:
    writer = slots.writer()
    try:
        for piece in PIECES:
            await writer.send(sink, piece)
    finally:
        writer.release()


async def test_a_connection_with_the_slot_writes_its_frame_through_before_the_next_starts() -> None:
    # Round-robin would interleave a, b, c piece by piece: every client would finish last.
    log: list[str] = []
    slots = WriteSlots(slots=1, stretch_bytes=1 << 30)
    await asyncio.gather(*(_send_all(slots, _Sink(n, log)) for n in "abc"))
    assert log == ["a"] * len(PIECES) + ["b"] * len(PIECES) + ["c"] * len(PIECES)


async def test_a_full_socket_hands_the_slot_on_and_waits_for_room() -> None:
    log: list[str] = []
    slots = WriteSlots(slots=1, stretch_bytes=1 << 30)
    slow, fast = _Sink("slow", log, room=2), _Sink("fast", log)
    both = asyncio.gather(_send_all(slots, slow), _send_all(slots, fast))
    for _ in range(50):
        await asyncio.sleep(0)
    assert log == ["slow", "slow"] + ["fast"] * len(PIECES)  # the reader that stopped holds no slot
    slow.drain(room=100)
    await asyncio.wait_for(both, 5)
    assert log.count("slow") == len(PIECES)


async def test_a_stretch_ends_after_stretch_bytes_and_the_waiting_connection_goes_next() -> None:
    log: list[str] = []
    piece = len(PIECES[0])
    slots = WriteSlots(slots=1, stretch_bytes=3 * piece, turn_bytes=2 * piece)
    await asyncio.gather(_send_all(slots, _Sink("a", log)), _send_all(slots, _Sink("b", log)))
    assert log[:9] == ["a"] * 3 + ["b"] * 3 + ["a"] * 3
    assert log.count("a") == log.count("b") == len(PIECES)


async def test_writers_write_at_most_turn_bytes_per_event_loop_turn() -> None:
    turns: list[int] = []
    turn = 0

    async def ticker() -> None:
        nonlocal turn
        while True:
            turn += 1
            await asyncio.sleep(0)  # one event-loop turn

    class Counted(_Sink):
        async def send_shared(self, piece: SharedPiece) -> None:
            await super().send_shared(piece)
            turns.append(turn)

    log: list[str] = []
    tick = asyncio.create_task(ticker())
    slots = WriteSlots(slots=3, turn_bytes=2 * len(PIECES[0]))  # each sink alone would write all in one turn
    await asyncio.gather(*(_send_all(slots, Counted(n, log)) for n in "abc"))
    tick.cancel()
    # Without the budget all of it goes in a turn or two; with it, two pieces a turn at most.
    assert len(turns) == 3 * len(PIECES)
    assert max(turns) - min(turns) + 1 >= len(turns) / 2


async def test_no_more_than_slots_connections_write_at_once() -> None:
    log: list[str] = []
    slots = WriteSlots(slots=2, stretch_bytes=1 << 30)
    sinks = [_Sink(str(i), log, room=1) for i in range(5)]  # each takes one piece, then is full
    tasks = [asyncio.create_task(_send_all(slots, s)) for s in sinks]
    for _ in range(50):
        await asyncio.sleep(0)
    # Each writer that finds its socket full gives its slot back: every connection got its first piece in.
    assert sorted(log) == [str(i) for i in range(5)]
    for s in sinks:
        s.drain(room=100)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert len(log) == 5 * len(PIECES)


async def test_a_writer_cancelled_while_it_waits_holds_no_slot() -> None:
    slots = WriteSlots(slots=1)
    log: list[str] = []
    holder, waiter = slots.writer(), slots.writer()
    await holder.send(_Sink("a", log), PIECES[0])
    waiting = asyncio.create_task(waiter.send(_Sink("b", log), PIECES[0]))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    holder.release()
    third = slots.writer()
    await asyncio.wait_for(third.send(_Sink("c", log), PIECES[0]), 1)
    assert log == ["a", "c"] and third.held


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError):
        WriteSlots(slots=0)
