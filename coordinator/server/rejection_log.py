"""Logging of rejections, rate-limited per client so that a hostile one cannot flood the log.

Per key (a remote address), the first `first` lines are logged; after that, at most one
summary line per `interval` seconds says how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_KEYS = 4096  # addresses remembered; the oldest is forgotten first


@dataclass
class _Tally:
    logged: int = 0
    suppressed: int = 0
    window_start: float = 0.0


class RejectionLog:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        first: int = 5,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.first = first
        self.interval = interval
        self._clock = clock
        self._tallies: OrderedDict[str, _Tally] = OrderedDict()

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        """Log `message % args` for `key`, unless `key` has used up its lines for now."""
        now = self._clock()
        tally = self._tallies.pop(key, None) or _Tally(window_start=now)
        self._tallies[key] = tally
        while len(self._tallies) > MAX_KEYS:
            self._tallies.popitem(last=False)
        if tally.logged < self.first:
            tally.logged += 1
            self.logger.log(level, message, *args)
            return
        tally.suppressed += 1
        if now - tally.window_start >= self.interval:
            self.logger.log(
                level,
                "%s: %d more rejections in the last %.0f s (latest: " + message + ")",
                key,
                tally.suppressed,
                now - tally.window_start,
                *args,
            )
            tally.suppressed, tally.window_start = 0, now
