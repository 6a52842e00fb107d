"""The connected clients, shared between the event loop (sessions) and the strategy thread (grid)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordinator.protocol.messages import Error
from coordinator.protocol.session import ServerConnection
from coordinator.server.metrics import Metrics

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
# Frames to send, or a WebSocket close code that ends the session.
Outbox = asyncio.Queue[bytes | int]


@dataclass
class ClientSession:
    node_id: int
    client_id: str
    backend: str
    agent: str | None
    address: str
    conn: ServerConnection
    outbox: Outbox
    connected_at: float = field(default_factory=time.time)

    def flush(self) -> None:
        """Move the protocol's queued frames to the writer task. Event-loop thread only."""
        for frame in self.conn.data_to_send():
            self.outbox.put_nowait(frame)

    def describe(self) -> dict[str, Any]:
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
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._sessions: dict[int, ClientSession] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost_listeners: list[Callable[[int], None]] = []

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def on_lost(self, listener: Callable[[int], None]) -> None:
        self._lost_listeners.append(listener)

    def off_lost(self, listener: Callable[[int], None]) -> None:
        if listener in self._lost_listeners:
            self._lost_listeners.remove(listener)

    def add(self, session: ClientSession) -> ClientSession | None:
        """Register a session; returns the session it replaces (same client reconnecting), if any."""
        with self._lock:
            old = self._sessions.get(session.node_id)
            self._sessions[session.node_id] = session
        if old is not None:
            self._notify_lost(old.node_id)
        return old

    def remove(self, session: ClientSession) -> None:
        with self._lock:
            if self._sessions.get(session.node_id) is not session:
                return
            del self._sessions[session.node_id]
        self._notify_lost(session.node_id)

    def _notify_lost(self, node_id: int) -> None:
        for listener in self._lost_listeners:
            listener(node_id)

    def node_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._sessions)

    def count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.describe() for s in self._sessions.values()]

    def send_task(self, node_id: int, task_id: str, frame: bytes) -> bool:
        """Thread-safe: queue a task frame to a client; False if it is not connected."""
        return self._call(node_id, lambda s: s.conn.send_task(task_id, frame))

    def send_error(self, node_id: int, error: Error) -> bool:
        return self._call(node_id, lambda s: s.conn.fail_task(error))

    def _call(self, node_id: int, action: Callable[[ClientSession], None]) -> bool:
        with self._lock:
            session = self._sessions.get(node_id)
        if session is None or self._loop is None or self._loop.is_closed():
            return False

        def run() -> None:
            action(session)
            self.metrics.count_rejections(session.conn.rejections)
            session.flush()

        self._loop.call_soon_threadsafe(run)
        return True

    def close_all(self, *, going_away: bool = False) -> None:
        """Close every session: 1000 ("run complete") ends a client; 1001 (going away) makes it reconnect."""
        with self._lock:
            sessions = list(self._sessions.values())
        if self._loop is None or self._loop.is_closed():
            return
        for s in sessions:
            self._loop.call_soon_threadsafe(s.outbox.put_nowait, CLOSE_GOING_AWAY if going_away else CLOSE_NORMAL)
