"""The inbound budget: above its limit, connections stop being read until what is held drains."""

from __future__ import annotations

from coordinator.server.inbound import SMALL_BYTES, InboundBudget

MB = 1 << 20


class FakeReader:
    def __init__(self, name: str) -> None:
        self.name = name
        self.reading = True

    def park(self) -> None:
        self.reading = False

    def unpark(self) -> None:
        self.reading = True

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
