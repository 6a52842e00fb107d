"""The learning rate each round's train tasks carry: `--lr`, scheduled across rounds.

Clients apply their own schedule within a round (`--lr-schedule`); this one sets where each
round starts, so a long federation can settle as centralised training does. Rounds count
from 1, and a resumed run continues the schedule from its stored rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RoundLr:
    lr: float
    schedule: str = "constant"  # constant, exponential, cosine
    gamma: float = 0.9
    rounds: int = 1

    def at(self, round_number: int) -> float:
        done = max(0, round_number - 1)
        if self.schedule == "exponential":
            return self.lr * self.gamma**done
        if self.schedule == "cosine":
            return self.lr * (1 + math.cos(math.pi * min(done, self.rounds) / self.rounds)) / 2
        return self.lr
