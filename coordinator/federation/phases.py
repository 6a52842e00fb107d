"""What happened in one train or evaluate phase: the grid fills it in and hands it over when the phase ends."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass
class PhaseReport:
    kind: str
    round: int
    started: float = field(default_factory=time.time)
    seconds: float = 0.0  # from the broadcast to the phase's end
    sent: int = 0  # tasks sent: the cohort, and the over-selected nodes with it
    ok: int = 0  # replies accepted into the aggregate
    failures: list[str] = field(default_factory=list)
    client_metrics: list[dict[str, float]] = field(default_factory=list)
    bytes_out: int = 0
    bytes_in: int = 0
    rejected: int = 0  # replies that arrived but failed the check (counted within `failures` too)
    clipped: int = 0  # accepted deltas scaled down to the run's norm bound
    dropped: int = 0  # tasks cancelled, or replies refused, once the quorum was in
    late: int = 0  # tasks still unanswered at the deadline (counted within `failures` too)
    resumed: int = 0  # tasks a node took up again on a new connection (SPEC §4.2)
    aggregate_seconds: float = 0.0  # spent decoding, checking and folding replies

    def add(self, other: PhaseReport) -> None:
        """Count a shard's report of the same phase in this one (its `sent` is already counted here)."""
        self.ok += other.ok
        self.failures += other.failures
        self.client_metrics += other.client_metrics
        self.bytes_out += other.bytes_out
        self.bytes_in += other.bytes_in
        self.rejected += other.rejected
        self.clipped += other.clipped
        self.dropped += other.dropped
        self.late += other.late
        self.resumed += other.resumed
        self.aggregate_seconds += other.aggregate_seconds

    def mean(self, key: str) -> float | None:
        """The mean of the finite values of `key`; never inf, whatever the values (None if there are none)."""
        values = self._finite(key)
        # Dividing first keeps every partial sum within the largest |value|, so no overflow.
        return sum(v / len(values) for v in values) if values else None

    def max(self, key: str) -> float | None:
        """The largest finite value of `key` (None if there are none)."""
        values = self._finite(key)
        return max(values) if values else None

    def _finite(self, key: str) -> list[float]:
        values = (m.get(key) for m in self.client_metrics)
        return [float(v) for v in values if isinstance(v, int | float) and _finite(v)]


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False
