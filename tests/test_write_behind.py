"""Rounds are committed on a writer thread while the next one runs, in order, one at a time (write_behind)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from coordinator.persistence.store import RoundRecord
from coordinator.server.write_behind import WriteBehind


class SlowSink:
    """A sink whose writes wait for `release`, and fail for the rounds in `fail`."""

    def __init__(self, fail: frozenset[int] = frozenset()) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.events: list[tuple[str, object]] = []
        self.fail = fail

    def on_round(self, run_id: str, record: RoundRecord, checkpoint: Sequence[bytes | memoryview]) -> None:
        self.started.set()
        assert self.release.wait(10)
        if record.round in self.fail:
            raise OSError("disk full")
        self.events.append(("round", record.round))

    def on_end(self, run_id: str, state: str, message: str) -> None:
        self.events.append(("end", (state, message)))


def _record(n: int) -> RoundRecord:
    return RoundRecord(round=n, seconds=0.1, clients=1, failures=0, accuracy=None, loss=None, epsilon=None, metrics={})


def test_a_round_is_written_while_the_next_runs_and_the_next_write_waits_for_it() -> None:
    sink = SlowSink()
    behind = WriteBehind(sink)
    behind.on_round("run", _record(1), [b"weights"])  # returns while the write is held
    assert sink.started.wait(10) and sink.events == []
    second = threading.Thread(target=behind.on_round, args=("run", _record(2), [b"weights"]))
    second.start()
    second.join(0.2)
    assert second.is_alive()  # one round in writing at a time: the second waits for the first
    sink.release.set()
    second.join(10)
    behind.on_end("run", "completed", "run complete")
    assert sink.events == [("round", 1), ("round", 2), ("end", ("completed", "run complete"))]


def test_a_failed_write_fails_the_run_at_its_next_round_or_at_its_end() -> None:
    sink = SlowSink(fail=frozenset({1, 3}))
    sink.release.set()
    behind = WriteBehind(sink)
    behind.on_round("run", _record(1), [])
    with pytest.raises(OSError, match="disk full"):
        behind.on_round("run", _record(2), [])
    behind.on_round("run", _record(3), [])
    behind.on_end("run", "completed", "run complete")
    assert sink.events == [("end", ("failed", "recording the last round: OSError: disk full"))]
