"""A fake `Nodes` for grid-level tests: no sockets, every node answers inside `send_task`."""

from __future__ import annotations

from collections.abc import Callable

from coordinator.federation.broadcast import Broadcast
from coordinator.federation.grid import NodeGrid
from coordinator.protocol import Error, Result, Task, decode
from coordinator.protocol.chunking import SharedFrame

Answer = Callable[[int, Task], Result | Error | None]


class FakeNodes:
    """Nodes that answer each task synchronously with `answer(node_id, task)`; None means never."""

    def __init__(self, ids: list[int], answer: Answer) -> None:
        self.ids = list(ids)
        self.answer = answer
        self.grid: NodeGrid | None = None
        self.sent: list[tuple[int, Task, bytes]] = []
        self.shared: list[SharedFrame] = []  # the broadcast object each task was sent as
        self.rejected: list[tuple[int, Error]] = []
        self.listeners: list[Callable[[int], None]] = []

    def node_ids(self) -> list[int]:
        return sorted(self.ids)

    def count(self) -> int:
        return len(self.ids)

    def send_task(self, node_id: int, task_id: str, broadcast: Broadcast) -> bool:
        if node_id not in self.ids:
            return False
        shared = broadcast.frame("fp32")
        frame = shared.join()
        task = decode(frame)
        assert isinstance(task, Task) and task.task_id == task_id
        self.sent.append((node_id, task, frame))
        self.shared.append(shared)
        reply = self.answer(node_id, task)
        if reply is not None:
            assert self.grid is not None
            self.grid.deliver(node_id, reply)
        return True

    def reject(self, node_id: int, error: Error) -> bool:
        self.rejected.append((node_id, error))
        return True

    def on_lost(self, listener: Callable[[int], None]) -> None:
        self.listeners.append(listener)

    def off_lost(self, listener: Callable[[int], None]) -> None:
        self.listeners.remove(listener)

    def close_all(self, *, going_away: bool = False) -> None:
        self.ids.clear()

    def lose(self, node_id: int) -> None:
        self.ids.remove(node_id)
        for listener in list(self.listeners):
            listener(node_id)

    def drop(self, node_id: int) -> None:
        """The node's connection drops and it reconnects at once: its tasks are lost, the node stays."""
        for listener in list(self.listeners):
            listener(node_id)
