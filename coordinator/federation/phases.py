"""What happened in one train or evaluate phase: the grid fills it in and hands it over when the phase ends."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PhaseReport:
    kind: str
    round: int
    started: float = field(default_factory=time.time)
    sent: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    client_metrics: list[dict[str, float]] = field(default_factory=list)
    bytes_out: int = 0
    bytes_in: int = 0

    def mean(self, key: str) -> float | None:
        values = [m[key] for m in self.client_metrics if key in m]
        return float(np.mean(values)) if values else None

    def max(self, key: str) -> float | None:
        values = [m[key] for m in self.client_metrics if key in m]
        return float(np.max(values)) if values else None
