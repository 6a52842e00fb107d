"""What one peer may hold: the per-connection limits, rate buckets (per connection, per address), the admission gate.

The gate is the coordinator-wide view: connections per remote address, and the bytes queued
to all clients together. Everything here runs on the event loop's thread only.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from coordinator.protocol.close_codes import Close
from coordinator.server.write_slots import WriteSlots
from coordinator.settings import Settings


@dataclass(frozen=True)
class ConnectionLimits:
    """How every connection is served; fixed for the coordinator's lifetime."""

    join_token: str | None
    max_frame_bytes: int
    heartbeat_seconds: float
    hello_timeout: float = 10.0
    max_connections_per_address: int = 16  # 0: no limit
    max_messages_per_second: float = 50.0
    message_burst: int = 200
    max_send_buffer_bytes: int = 64 * 1024 * 1024
    max_buffered_bytes: int = 1024 * 1024 * 1024
    max_message_bytes: int = 64 * 1024 * 1024
    min_upload_rate: float = 16 * 1024  # bytes a second a message under way must keep up (0: none)

    @classmethod
    def from_settings(cls, s: Settings) -> ConnectionLimits:
        return cls(
            s.join_token,
            s.max_frame_bytes,
            s.heartbeat_seconds,
            s.hello_timeout,
            s.max_connections_per_address,
            s.max_messages_per_second,
            s.message_burst,
            s.max_send_buffer_bytes,
            s.max_buffered_bytes,
            s.max_message_bytes,
            s.min_upload_rate,
        )


class TokenBucket:
    """`rate` tokens a second, up to `burst` saved; each message takes one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def full(self) -> bool:
        """Whether the bucket has refilled to its burst (it is as good as new)."""
        return self._tokens + (self._clock() - self._last) * self.rate >= self.burst

    def take(self) -> bool:
        """Spend one token; False (and nothing spent) when the bucket is empty."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class AddressBuckets:
    """A `TokenBucket` per remote address, for requests that cost something per call (`/api/join`).

    Addresses come and go; a bucket that has filled up again is the same as no bucket, so those
    are dropped whenever the table has doubled since the last sweep: it stays about as large as
    the number of addresses seen within `burst / rate` seconds.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        """`burst` 0: no limit (as `--max-connections-per-address 0`, which it follows)."""
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._sweep_above = 1024

    def take(self, host: str) -> bool:
        """Spend one of `host`'s tokens; False when it has none left."""
        if not self.burst:
            return True
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= self._sweep_above:
                self._sweep()
            bucket = self._buckets[host] = TokenBucket(self.rate, self.burst, self._clock)
        return bucket.take()

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self) -> None:
        self._buckets = {h: b for h, b in self._buckets.items() if not b.full()}
        self._sweep_above = max(1024, 2 * len(self._buckets))


class ConnectionGate:
    """Admission for new connections: a cap per remote address, and a cap on bytes queued to all clients."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.buffered = 0  # bytes in every connection's outbox and unfinished chunked messages
        self.write_slots = WriteSlots()  # who writes a broadcast into their socket now
        self._per_address: Counter[str] = Counter()

    def enter(self, host: str) -> Close | None:
        """Admit a connection from `host` (then `leave` must follow), or the code to refuse it with."""
        cap = self.limits.max_connections_per_address
        if cap and self._per_address[host] >= cap:
            return Close.TOO_MANY_CONNECTIONS
        if self.buffered > self.limits.max_buffered_bytes:
            return Close.TRY_AGAIN_LATER
        self._per_address[host] += 1
        return None

    def leave(self, host: str) -> None:
        self._per_address[host] -= 1
        if self._per_address[host] <= 0:
            del self._per_address[host]

    def connections(self, host: str) -> int:
        return self._per_address[host]
