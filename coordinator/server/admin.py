"""The admin API under /api/admin/, behind `Authorization: Bearer <admin token>`.

The routes see the coordinator only through `RunAdmin`, the few operations an
operator has.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from coordinator.persistence.store import RunInfo

Handler = Callable[[Request], Awaitable[JSONResponse]]


class RunAdmin(Protocol):
    @property
    def admin_token(self) -> str | None:
        """The bearer token; None turns the admin API off."""
        ...

    def run_state(self) -> dict[str, Any]:
        """The current run: its id, state, and whether it is paused or stopping."""
        ...

    def list_runs(self) -> list[RunInfo]: ...

    def connected_clients(self) -> list[dict[str, Any]]:
        """Every connected client: node id, client id, backend, agent, address, seconds connected, tasks."""
        ...

    def pause(self) -> None:
        """Pause after the current phase."""
        ...

    def resume(self) -> None: ...

    def stop(self) -> None:
        """End the current run as "stopped" at the next safe point."""
        ...

    def start_run(self, overrides: dict[str, Any]) -> str:
        """Start a new run; ValueError/TypeError for bad settings, RuntimeError while a run is in progress."""
        ...


def _guarded(admin: RunAdmin, handler: Handler) -> Handler:
    async def guarded(request: Request) -> JSONResponse:
        token = admin.admin_token
        if not token:
            return JSONResponse({"error": "the admin API is off: start the coordinator with --admin-token"}, 403)
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse({"error": "missing or wrong bearer token"}, 401, {"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return guarded


def admin_routes(admin: RunAdmin) -> list[Route]:
    async def runs(_: Request) -> JSONResponse:
        return JSONResponse(
            [
                {
                    "id": r.id,
                    "state": r.state,
                    "model": r.model_spec["name"],
                    "num_rounds": r.num_rounds,
                    "completed_rounds": r.completed_rounds,
                    "created_at": r.created_at.isoformat(),
                }
                for r in admin.list_runs()
            ]
        )

    async def clients(_: Request) -> JSONResponse:
        return JSONResponse(admin.connected_clients())

    async def pause(_: Request) -> JSONResponse:
        admin.pause()
        return JSONResponse(admin.run_state())

    async def resume(_: Request) -> JSONResponse:
        admin.resume()
        return JSONResponse(admin.run_state())

    async def stop(_: Request) -> JSONResponse:
        admin.stop()
        return JSONResponse(admin.run_state())

    async def start(request: Request) -> JSONResponse:
        overrides = await request.json() if await request.body() else {}
        if not isinstance(overrides, dict):
            return JSONResponse({"error": "the body is a JSON object of run settings"}, 400)
        try:
            run_id = admin.start_run(overrides)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except RuntimeError as exc:
            return JSONResponse({"error": str(exc)}, 409)
        return JSONResponse({"run_id": run_id}, 201)

    def g(handler: Handler) -> Handler:
        return _guarded(admin, handler)

    return [
        Route("/api/admin/runs", g(runs), methods=["GET"]),
        Route("/api/admin/runs", g(start), methods=["POST"]),
        Route("/api/admin/clients", g(clients), methods=["GET"]),
        Route("/api/admin/pause", g(pause), methods=["POST"]),
        Route("/api/admin/resume", g(resume), methods=["POST"]),
        Route("/api/admin/stop", g(stop), methods=["POST"]),
    ]
