"""The connected clients: the WebSocket side's implementation of the federation core's `Nodes`.

Shared between the event loop (connections come and go, frames are written) and the
strategy's thread (the grid sends tasks and rejections): every action on a client is
handed to the event loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordinator.federation.broadcast import Broadcast
from coordinator.protocol.close_codes import Close
from coordinator.protocol.endpoints import ServerProtocol
from coordinator.protocol.messages import Error
from coordinator.server.metrics import Metrics
from coordinator.server.outbox import Outbox


@dataclass
class ConnectedClient:
    """The coordinator's record of one joined client: who it is, and its protocol endpoint and outbox."""

    node_id: int
    client_id: str
    backend: str
    agent: str | None
    address: str
    conn: ServerProtocol
    outbox: Outbox
    weights_encoding: str = "fp32"  # what its welcome named (SPEC §2.1)
    resumable: bool = False  # its hello said it keeps its jobs across reconnects (SPEC §4.2)
    connected_at: float = field(default_factory=time.time)

    def flush(self) -> None:
        """Move the protocol's queued frames to the writer task. Event-loop thread only."""
        for frame in self.conn.outgoing():
            self.outbox.put(frame)

    def describe(self) -> dict[str, Any]:
        """The operator's view of this client (admin API only: it names the client and its address)."""
        return {
            "node_id": self.node_id,
            "client_id": self.client_id,
            "backend": self.backend,
            "agent": self.agent,
            "address": self.address,
            "connected_seconds": round(time.time() - self.connected_at, 1),
            "tasks_in_flight": len(self.conn.in_flight),
        }


class ClientRegistry:
    """Joined clients by node id; implements `coordinator.federation.nodes.Nodes` and `AwayNodes`."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._clients: dict[int, ConnectedClient] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost_listeners: list[Callable[[int], None]] = []
        self._away_listeners: list[Callable[[int], None]] = []

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def on_lost(self, listener: Callable[[int], None]) -> None:
        self._lost_listeners.append(listener)

    def off_lost(self, listener: Callable[[int], None]) -> None:
        if listener in self._lost_listeners:
            self._lost_listeners.remove(listener)

    def on_away(self, listener: Callable[[int], None]) -> None:
        """Call `listener(node_id)` when a resumable client's connection ends, before the lost listeners."""
        self._away_listeners.append(listener)

    def off_away(self, listener: Callable[[int], None]) -> None:
        """Stop calling a listener added with `on_away`; unknown listeners are ignored."""
        if listener in self._away_listeners:
            self._away_listeners.remove(listener)

    def add(self, client: ConnectedClient) -> ConnectedClient | None:
        """Register a client; returns the connection it replaces (the same client reconnecting), if any."""
        with self._lock:
            old = self._clients.get(client.node_id)
            self._clients[client.node_id] = client
        if old is not None:
            self._notify_lost(old)
        return old

    def remove(self, client: ConnectedClient) -> None:
        with self._lock:
            if self._clients.get(client.node_id) is not client:
                return
            del self._clients[client.node_id]
        self._notify_lost(client)

    def _notify_lost(self, client: ConnectedClient) -> None:
        if client.resumable:  # first, so that what they hold for the node's return the lost listeners spare
            for listener in self._away_listeners:
                listener(client.node_id)
        for listener in self._lost_listeners:
            listener(client.node_id)

    def node_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._clients)

    def count(self) -> int:
        with self._lock:
            return len(self._clients)

    def describe(self) -> list[dict[str, Any]]:
        """Every client with its ids and address: for the admin API, never for public endpoints."""
        with self._lock:
            return [s.describe() for s in self._clients.values()]

    def by_backend(self) -> dict[str, int]:
        """How many clients each backend has: the public summary, naming no one."""
        with self._lock:
            return dict(Counter(s.backend for s in self._clients.values()))

    def send_task(self, node_id: int, task_id: str, task: Broadcast | bytes) -> bool:
        """Thread-safe: queue a task to a client, in its weights encoding; False if it is not connected."""
        if isinstance(task, bytes):  # an already encoded frame
            return self._call(node_id, lambda s: s.conn.send_task(task_id, task))
        return self._call(
            node_id, lambda s: s.conn.send_task(task_id, task.frame(s.weights_encoding, s.conn.peer_max_frame_bytes))
        )

    def reject(self, node_id: int, error: Error) -> bool:
        """Thread-safe: tell a client its reply was refused; False if it is not connected."""
        return self._call(node_id, lambda s: s.conn.fail_task(error))

    def _call(self, node_id: int, action: Callable[[ConnectedClient], None]) -> bool:
        with self._lock:
            client = self._clients.get(node_id)
        if client is None or self._loop is None or self._loop.is_closed():
            return False

        def run() -> None:
            action(client)
            self.metrics.count_rejections(client.conn.rejections)
            client.flush()

        self._loop.call_soon_threadsafe(run)
        return True

    def close_all(self, *, going_away: bool = False) -> None:
        """Close every connection: 1000 ("run complete") ends a client; 1001 (going away) makes it reconnect."""
        code = Close.GOING_AWAY if going_away else Close.RUN_COMPLETE
        with self._lock:
            clients = list(self._clients.values())
        if self._loop is None or self._loop.is_closed():
            return
        for s in clients:
            self._loop.call_soon_threadsafe(s.outbox.close, code)
