"""The admin API under /api/admin/, behind `Authorization: Bearer <admin token>`."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from coordinator.settings import Settings

if TYPE_CHECKING:
    from coordinator.server.app import Coordinator

Handler = Callable[[Request], Awaitable[JSONResponse]]


def _guarded(coordinator: Coordinator, handler: Handler) -> Handler:
    async def guarded(request: Request) -> JSONResponse:
        token = coordinator.hub.settings.admin_token
        if not token:
            return JSONResponse({"error": "the admin API is off: start the coordinator with --admin-token"}, 403)
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse({"error": "missing or wrong bearer token"}, 401, {"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return guarded


def admin_routes(coordinator: Coordinator) -> list[Route]:
    def state() -> dict[str, Any]:
        control = coordinator.federation.control
        return {
            "run_id": coordinator.federation.run.id,
            "state": coordinator.status.state,
            "paused": control.paused,
            "stopping": control.stopping,
        }

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
                for r in coordinator.store.list_runs()
            ]
        )

    async def pause(_: Request) -> JSONResponse:
        coordinator.federation.control.pause()
        coordinator.status.update(state="paused", message="paused by the operator (after the current phase)")
        return JSONResponse(state())

    async def resume(_: Request) -> JSONResponse:
        coordinator.federation.control.resume()
        coordinator.status.update(state="running", message="")
        return JSONResponse(state())

    async def stop(_: Request) -> JSONResponse:
        coordinator.federation.control.stop()
        return JSONResponse(state())

    async def start(request: Request) -> JSONResponse:
        overrides = await request.json() if await request.body() else {}
        if not isinstance(overrides, dict):
            return JSONResponse({"error": "the body is a JSON object of run settings"}, 400)
        try:
            # What to train may change; where and how to serve may not.
            Settings.from_dict({**coordinator.hub.settings.to_dict(), **overrides})
            if set(overrides) & set(Settings.SERVING):
                raise ValueError(
                    f"these settings cannot change at run time: {sorted(set(overrides) & set(Settings.SERVING))}"
                )
            run_id = coordinator.start_run(overrides)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except RuntimeError as exc:
            return JSONResponse({"error": str(exc)}, 409)
        return JSONResponse({"run_id": run_id}, 201)

    def g(handler: Handler) -> Handler:
        return _guarded(coordinator, handler)

    return [
        Route("/api/admin/runs", g(runs), methods=["GET"]),
        Route("/api/admin/runs", g(start), methods=["POST"]),
        Route("/api/admin/pause", g(pause), methods=["POST"]),
        Route("/api/admin/resume", g(resume), methods=["POST"]),
        Route("/api/admin/stop", g(stop), methods=["POST"]),
    ]
