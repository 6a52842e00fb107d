"""The composition root: one coordinator process, its pieces wired together, and its ASGI app.

`Coordinator` builds the store, the client registry, the live status and the
Prometheus metrics; it runs the current `RunLoop` in a thread of its own, with a
`RunRecorder` as its sink (written behind the rounds: `WriteBehind`), and serves the
routes (`/ws`, the read-only API, the admin API, the page). The routes reach it through
narrow interfaces: a connection through `RunHost`, the admin API through `RunAdmin`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from coordinator.federation.nodes import Nodes
from coordinator.federation.run_loop import RunLoop
from coordinator.federation.status import RunStatus
from coordinator.persistence.store import Registration, RunInfo, Store
from coordinator.protocol.encodings import Encoding
from coordinator.protocol.messages import Error, Hello, Result
from coordinator.server.admin import admin_routes
from coordinator.server.clients import ClientRegistry
from coordinator.server.gateways import GatewayFactory
from coordinator.server.limits import AddressBuckets, ConnectionGate, ConnectionLimits
from coordinator.server.memory import GcKeeper, pin_mmap_threshold
from coordinator.server.metrics import Metrics
from coordinator.server.recorder import RunRecorder
from coordinator.server.routes import api_routes
from coordinator.server.web import IsolationHeaders, web_routes
from coordinator.server.websocket import serve_connection
from coordinator.server.write_behind import WriteBehind
from coordinator.settings import Settings

log = logging.getLogger(__name__)


class Coordinator:
    """Owns the pieces of one coordinator process and the thread the current run loop lives in."""

    def __init__(self, settings: Settings, gateways: GatewayFactory | None = None) -> None:
        """`gateways`: builds the pool of gateways that hold the clients (None: they connect to `/ws` here)."""
        self.store = Store(settings.db)
        self.metrics = Metrics()
        self.clients = ClientRegistry(self.metrics)
        self.status = RunStatus()
        self.gateways = gateways(self) if gateways is not None else None
        self.nodes: Nodes = self.gateways if self.gateways is not None else self.clients
        self.metrics.track_clients(self.nodes.count)
        if self.gateways is not None:
            self.metrics.track_gateways(self.gateways.describe)
        # Rounds are committed while the next one runs (see `write_behind`).
        self.recorder = WriteBehind(RunRecorder(self.store, self.status, self.metrics, self.nodes))
        self.run_loop = RunLoop(settings, self.store, self.nodes, self.status, self.recorder)
        # How to serve never changes after start; what to train comes from each run.
        self.settings = self.run_loop.settings
        self.limits = ConnectionLimits.from_settings(settings)
        self.gate = ConnectionGate(self.limits)
        self.joins = AddressBuckets(settings.max_joins_per_second, settings.max_connections_per_address)
        self._thread = threading.Thread(target=self.run_loop.run_to_end, name="pollen-rounds", daemon=True)

    @property
    def error(self) -> BaseException | None:
        """Why the current run failed, if it did."""
        return self.run_loop.error

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.clients.bind_loop(loop)
        self._thread.start()

    def shutdown(self) -> None:
        """SIGTERM: every completed round is already committed; leave the run resumable and tell clients."""
        if self.running:
            log.warning(
                "shutting down: run %s resumes from round %d on restart",
                self.run_loop.run.id,
                self.status.current_round + 1,
            )
        self.nodes.close_all(going_away=True)

    # RunHost: what connections need --------------------------------------------
    def register_client(self, hello: Hello) -> Registration:
        return self.store.register_client(hello.client_id, hello.secret, hello.backend, hello.agent)

    @property
    def run_id(self) -> str:
        return self.status.run_id or ""

    @property
    def run_over(self) -> bool:
        return self.status.finished.is_set()

    @property
    def encodings(self) -> tuple[Encoding, Encoding]:
        settings = self.run_loop.settings
        return settings.update_encoding, settings.weights_encoding  # type: ignore[return-value]

    def deliver(self, node_id: int, reply: Result | Error) -> bool:
        return self.run_loop.grid.deliver(node_id, reply)

    def resume_tasks(self, node_id: int, task_ids: list[str]) -> list[str]:
        return self.run_loop.grid.resume(node_id, task_ids)

    # RunAdmin: what an operator may do -----------------------------------------
    @property
    def admin_token(self) -> str | None:
        return self.settings.admin_token

    def run_state(self) -> dict[str, Any]:
        control = self.run_loop.control
        return {
            "run_id": self.run_loop.run.id,
            "state": self.status.state,
            "paused": control.paused,
            "held": control.held,  # paused, and the phase under way when it was asked for is over
            "stopping": control.stopping,
            "gateways": self.gateways.describe() if self.gateways is not None else [],
        }

    def list_runs(self) -> list[RunInfo]:
        return self.store.list_runs()

    def connected_clients(self) -> list[dict[str, Any]]:
        return self.clients.describe()

    def pause(self) -> None:
        self.run_loop.control.pause()
        self.status.update(state="paused", message="paused by the operator (after the current phase)")

    def resume(self) -> None:
        self.run_loop.control.resume()
        self.status.update(state="running", message="")

    def stop(self) -> None:
        self.run_loop.control.stop()

    def start_run(self, overrides: dict[str, Any]) -> str:
        """Start a new run with the current settings plus `overrides`; the previous one must be over."""
        # What to train may change; where and how to serve may not.
        settings = Settings.from_dict({**self.settings.to_dict(), **overrides, "new_run": True})
        if set(overrides) & set(Settings.SERVING):
            raise ValueError(
                f"these settings cannot change at run time: {sorted(set(overrides) & set(Settings.SERVING))}"
            )
        if self.running:
            raise RuntimeError("a run is in progress: stop it first")
        self.status.finished.clear()
        self.status.update(state="starting", message="", history=[], current_round=0)
        self.run_loop = RunLoop(settings, self.store, self.nodes, self.status, self.recorder)
        self.settings = self.run_loop.settings
        self._thread = threading.Thread(target=self.run_loop.run_to_end, name="pollen-rounds", daemon=True)
        self._thread.start()
        return self.run_loop.run.id

    # The ASGI app ----------------------------------------------------------------
    def app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            pin_mmap_threshold()
            keeper = GcKeeper()
            keeper.start()
            gc_task = asyncio.create_task(keeper.run())
            if self.gateways is not None:
                await asyncio.to_thread(self.gateways.start)
            self.start(asyncio.get_running_loop())
            yield
            gc_task.cancel()
            self.shutdown()
            await asyncio.sleep(0.2)  # let the close frames go out
            if self.gateways is not None:
                await asyncio.to_thread(self.gateways.stop)

        async def ws(websocket: WebSocket) -> None:
            await serve_connection(websocket, self.limits, self.gate, self.clients, self.metrics, self)

        return Starlette(
            routes=[
                *api_routes(self.status, self.clients, self.metrics, self.gateways, self.joins),
                *admin_routes(self),
                WebSocketRoute("/ws", ws),
                *web_routes(self.settings.demo_shards),
            ],
            middleware=[Middleware(IsolationHeaders)],
            lifespan=lifespan,
        )
