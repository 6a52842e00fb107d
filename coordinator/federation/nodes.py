"""`Nodes`: what the federation core needs from "the connected clients", and nothing more.

The round loop and the grid talk to clients only through this interface, so they
know no transport: the WebSocket registry implements it in production, a fake
implements it in the grid's unit tests, and a gateway on another machine can
implement it later. Implementations are called from the strategy's thread and
must be thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from coordinator.federation.broadcast import Broadcast
from coordinator.protocol.messages import Error

LostListener = Callable[[int], None]


class Nodes(Protocol):
    def node_ids(self) -> list[int]:
        """The ids of the nodes connected now, sorted."""
        ...

    def count(self) -> int:
        """How many nodes are connected now."""
        ...

    def send_task(self, node_id: int, task_id: str, task: Broadcast) -> bool:
        """Queue a train/evaluate task to a node; False if that node is not connected.

        The same `task` goes to every node of a phase: implementations send the node the shared
        `task.frame(its weights encoding)`, never a copy.
        """
        ...

    def reject(self, node_id: int, error: Error) -> bool:
        """Tell a node that its reply was refused; False if it is gone."""
        ...

    def on_lost(self, listener: LostListener) -> None:
        """Call `listener(node_id)` whenever a node disconnects or is replaced by a reconnection."""
        ...

    def off_lost(self, listener: LostListener) -> None:
        """Stop calling a listener added with `on_lost`; unknown listeners are ignored."""
        ...

    def close_all(self, *, going_away: bool = False) -> None:
        """Disconnect every node: for good (the run is over), or `going_away` so that they reconnect."""
        ...


@runtime_checkable
class AwayNodes(Protocol):
    """Nodes whose clients may keep their jobs across reconnects (SPEC §4.2): a `Nodes` that is also this says so."""

    def on_away(self, listener: LostListener) -> None:
        """Call `listener(node_id)` when the connection of a client that keeps its jobs ends.

        It is called just before the lost listeners hear of the same ending: what it holds for the
        node's return, a lost listener may spare.
        """
        ...

    def off_away(self, listener: LostListener) -> None:
        """Stop calling a listener added with `on_away`; unknown listeners are ignored."""
        ...
