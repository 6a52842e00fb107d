"""The run's live status, as `/api/status` reports it; updated by the run loop, read by HTTP handlers."""

from __future__ import annotations

import threading
import time
from typing import Any


class RunStatus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.run_id: str | None = None
        self.state = "starting"
        self.model: str | None = None
        self.strategy: str | None = None
        self.current_round = 0
        self.total_rounds = 0
        self.history: list[dict[str, Any]] = []
        self.message = ""
        self.dp: dict[str, Any] | None = None
        self.data: dict[str, Any] | None = None  # the run's data schema (SPEC §2.3): pages prepare files by it
        self.input_shape: list[int] | None = None  # one example's shape, which a page resizes pictures to
        self.started = time.time()
        self.finished = threading.Event()

    def update(self, **fields: Any) -> None:
        with self._lock:
            for name, value in fields.items():
                setattr(self, name, value)

    def add_round(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.history.append(record)
            self.current_round = record["round"]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "run_id": self.run_id,
                "state": self.state,
                "message": self.message,
                "model": self.model,
                "strategy": self.strategy,
                "current_round": self.current_round,
                "total_rounds": self.total_rounds,
                "dp": self.dp,
                "data": self.data,
                "input_shape": self.input_shape,
                "rounds": list(self.history),
                "uptime_seconds": round(time.time() - self.started, 1),
            }
