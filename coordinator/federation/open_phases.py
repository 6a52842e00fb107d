"""The phases under way and the one condition variable that guards them: what replies, losses and waits share.

The coordinator's grid and a gateway both keep open phases by task id, take replies and
losses into them from their nodes' thread, and wait on the strategy's (or the gateway's
phase) thread until the phases are complete or their deadline passes (or, within a second,
until the run is stopping).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from coordinator.federation.phase import Phase
from coordinator.federation.replies import Lost, Reply
from coordinator.protocol import messages as wire


class OpenPhases:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.phases: dict[str, Phase] = {}  # by task id; guarded by `cond`

    def deliver(self, node_id: int, reply: wire.Result | wire.Error) -> bool:
        """A node answered; False if no such task is waiting for it (late, cancelled, or never sent)."""
        if not isinstance(reply.reply_to, str):  # other Nodes implementations may not have parsed it as ours does
            return False
        with self.cond:
            phase = self.phases.get(reply.reply_to)
            if phase is None or not phase.take(node_id, reply):
                return False
            self._woken_by(phase)
        return True

    def lost(self, node_id: int) -> None:
        """A node went away: each open task of it is answered as lost."""
        with self.cond:
            for phase in list(self.phases.values()):
                if phase.take(node_id, Lost()):
                    self._woken_by(phase)

    def take(self, phase: Phase, node_id: int, reply: Reply) -> None:
        with self.cond:
            if phase.take(node_id, reply):
                self._woken_by(phase)

    def wait(self, phases: list[Phase], timeout: float | None, stop: Callable[[], bool] = lambda: False) -> None:
        """Until every phase is complete, `stop()` is true, or `timeout` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not all(p.complete for p in phases) and not stop():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                self.cond.wait(min(left, 1.0) if left is not None else 1.0)

    def _woken_by(self, phase: Phase) -> None:
        # Waiters wait for whole phases: woken by every reply, the strategy's thread would take the
        # GIL from the event loop once per client for nothing.
        if phase.complete:
            self.cond.notify_all()
