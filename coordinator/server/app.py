"""The coordinator's ASGI app: `/ws` for clients, `/healthz` and `/api/status` for people and probes."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from coordinator.persistence.store import Store
from coordinator.server.admin import admin_routes
from coordinator.server.clients import ClientRegistry
from coordinator.server.control import RunStopped
from coordinator.server.federation import Federation
from coordinator.server.metrics import Metrics
from coordinator.server.status import RunStatus
from coordinator.server.web import IsolationHeaders, web_routes
from coordinator.server.websocket import Hub, serve_connection
from coordinator.settings import Settings

log = logging.getLogger(__name__)


class Coordinator:
    """Owns the pieces of one coordinator process and the thread the run loop lives in."""

    def __init__(self, settings: Settings) -> None:
        self.store = Store(settings.db)
        self.metrics = Metrics()
        self.clients = ClientRegistry(self.metrics)
        self.metrics.track_clients(self.clients.count)
        self.status = RunStatus()
        self.federation = Federation(settings, self.store, self.clients, self.status, self.metrics)
        self.hub = Hub(
            self.federation.settings, self.store, self.clients, self.status, self.metrics, self.federation.grid
        )
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pollen-rounds", daemon=True)

    def _run(self) -> None:
        federation = self.federation
        try:
            federation.run_rounds()
        except RunStopped:
            log.warning("run %s stopped by request", federation.run.id)
            self._end(federation, "stopped", "stopped by the operator")
        except BaseException as exc:
            log.exception("the run failed")
            self.error = exc
            self._end(federation, "failed", f"{type(exc).__name__}: {exc}")

    def _end(self, federation: Federation, state: str, message: str) -> None:
        federation.grid.detach()
        self.store.set_state(federation.run.id, state)
        self.status.update(state=state, message=message)
        self.status.finished.set()
        self.clients.close_all()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.clients.bind_loop(loop)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start_run(self, overrides: dict[str, Any]) -> str:
        """Start a new run with the current settings plus `overrides`; the previous one must be over."""
        if self.running:
            raise RuntimeError("a run is in progress: stop it first")
        settings = Settings.from_dict({**self.hub.settings.to_dict(), **overrides, "new_run": True})
        self.status.finished.clear()
        self.status.update(state="starting", message="", history=[], current_round=0)
        self.error = None
        self.federation = Federation(settings, self.store, self.clients, self.status, self.metrics)
        self.hub.settings, self.hub.grid = self.federation.settings, self.federation.grid
        self._thread = threading.Thread(target=self._run, name="pollen-rounds", daemon=True)
        self._thread.start()
        return self.federation.run.id

    def shutdown(self) -> None:
        """SIGTERM: every completed round is already committed; leave the run resumable and tell clients."""
        if self.running:
            log.warning(
                "shutting down: run %s resumes from round %d on restart",
                self.federation.run.id,
                self.status.current_round + 1,
            )
        self.clients.close_all(going_away=True)

    def app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            self.start(asyncio.get_running_loop())
            yield
            self.shutdown()
            await asyncio.sleep(0.2)  # let the close frames go out

        async def healthz(_: Request) -> PlainTextResponse:
            return PlainTextResponse("ok")

        async def status(_: Request) -> JSONResponse:
            return JSONResponse(
                {
                    **self.status.snapshot(),
                    "clients_connected": self.clients.count(),
                    "clients": self.clients.describe(),
                }
            )

        async def metrics(_: Request) -> Response:
            return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

        async def ws(websocket: WebSocket) -> None:
            await serve_connection(websocket, self.hub)

        return Starlette(
            routes=[
                Route("/healthz", healthz),
                Route("/api/status", status),
                Route("/metrics", metrics),
                *admin_routes(self),
                WebSocketRoute("/ws", ws),
                *web_routes(self.hub.settings.demo_shards),
            ],
            middleware=[Middleware(IsolationHeaders)],
            lifespan=lifespan,
        )
