"""The phases under way and the one condition variable that guards them: what replies, losses and waits share.

The coordinator's grid and a gateway both keep open phases by task id, take replies and
losses into them from their nodes' thread, and wait on the strategy's (or the gateway's
phase) thread until the phases are complete or their deadline passes (or, within a second,
until the run is stopping).

A node whose client keeps its jobs across reconnects (SPEC §4.2) is first `away`, then
`lost`: its tasks are held for it (`Phase.away`), the others fail. When it comes back,
`resume` gives it the tasks it claims. Tasks held too long expire in the waiting thread,
which wakes for the first expiry; nothing else has to run for a node that never returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from coordinator.federation.phase import Phase
from coordinator.federation.replies import Lost, Reply
from coordinator.protocol import messages as wire
from coordinator.protocol.limits import MAX_RESUME_IDS

# Why a task held for its node fails when the node comes back without claiming it.
UNCLAIMED = "came back without this task"


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

    def away(self, node_id: int) -> None:
        """A node's connection ended, but its client keeps its jobs: its open tasks are held for it a while.

        Call it before `lost` for the same ending: `lost` then spares the held tasks. A phase without a
        grace holds nothing, and `lost` fails its task as for any node.
        """
        now = time.monotonic()
        with self.cond:
            held = [phase.away(node_id, now) for phase in self.phases.values()]
            if any(held):
                self.cond.notify_all()  # a waiter asleep for up to a second wakes for this expiry on time

    def lost(self, node_id: int) -> None:
        """A node went away: each open task of it is answered as lost, but those held for its return."""
        with self.cond:
            for phase in list(self.phases.values()):
                if not phase.is_away(node_id) and phase.take(node_id, Lost()):
                    self._woken_by(phase)

    def resume(self, node_id: int, task_ids: Iterable[str]) -> list[str]:
        """The node is back on a new connection, which claims `task_ids`: those still open for it, in order.

        They are the node's tasks again, their replies due on the new connection. An unknown id, or
        another node's task, is not among them; at most `MAX_RESUME_IDS` claims are looked at. The
        node's other tasks held for its return fail now: its client came back without them.
        """
        claimed = list(dict.fromkeys(task_ids))[:MAX_RESUME_IDS]
        with self.cond:
            resumed = [t for t in claimed if (phase := self.phases.get(t)) is not None and phase.back(node_id)]
            for phase in list(self.phases.values()):
                if phase.is_away(node_id) and phase.take(node_id, Lost(UNCLAIMED)):
                    self._woken_by(phase)
        return resumed

    def expire(self) -> None:
        """Fail the tasks held for nodes that did not come back within their phase's grace."""
        now = time.monotonic()
        with self.cond:
            for phase in list(self.phases.values()):
                if phase.expire(now):
                    self._woken_by(phase)

    def take(self, phase: Phase, node_id: int, reply: Reply) -> None:
        with self.cond:
            if phase.take(node_id, reply):
                self._woken_by(phase)

    def wait(self, phases: list[Phase], timeout: float | None, stop: Callable[[], bool] = lambda: False) -> None:
        """Until every phase is complete, `stop()` is true, or `timeout` seconds have passed.

        Tasks held for nodes expire here, on time: a node that never comes back holds its phase
        for its grace, not to the deadline.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while True:
                self.expire()
                if all(p.complete for p in phases) or stop():
                    return
                now = time.monotonic()
                left = None if deadline is None else deadline - now
                if left is not None and left <= 0:
                    return
                expiries = [e for e in (p.next_expiry() for p in self.phases.values()) if e is not None]
                naps = [1.0, *([] if left is None else [left]), *(e - now for e in expiries)]
                self.cond.wait(max(min(naps), 0.0))

    def _woken_by(self, phase: Phase) -> None:
        # Waiters wait for whole phases: woken by every reply, the strategy's thread would take the
        # GIL from the event loop once per client for nothing.
        if phase.complete:
            self.cond.notify_all()
