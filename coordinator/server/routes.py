"""The read-only HTTP endpoints: `/healthz` for probes, `/api/status` for people and the dashboard, `/metrics`.

These are public: they name no client (no ids, secrets or addresses). The per-client view
is the admin API's `/api/admin/clients`.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from coordinator.federation.status import RunStatus
from coordinator.server.clients import ClientRegistry
from coordinator.server.gateways import Gateways
from coordinator.server.limits import AddressBuckets
from coordinator.server.metrics import Metrics


def api_routes(
    status: RunStatus, clients: ClientRegistry, metrics: Metrics, gateways: Gateways | None, joins: AddressBuckets
) -> list[Route]:
    async def healthz(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def run_status(_: Request) -> JSONResponse:
        by_backend = clients.by_backend()
        body = {**status.snapshot(), "clients_connected": sum(by_backend.values()), "clients_by_backend": by_backend}
        if gateways is not None:
            body["gateways"] = gateways.describe()
            body["clients_connected"] = gateways.count()
        return JSONResponse(body)

    async def join(request: Request) -> JSONResponse:
        """Where a client should connect: the least-loaded live gateway, or this process's own `/ws`.

        Each answer reserves a place on a gateway for a while: one address asking in a loop would
        skew where everyone else is sent, so calls are rate-limited per address.
        """
        if not joins.take(request.client.host if request.client else ""):
            retry = str(max(1, round(1 / joins.rate)))
            return JSONResponse({"error": "too many join requests; retry later"}, 429, {"Retry-After": retry})
        if gateways is None:
            scheme = "wss" if request.url.scheme == "https" else "ws"
            return JSONResponse({"url": f"{scheme}://{request.url.netloc}/ws"})
        url = gateways.join_url()
        if url is None:
            return JSONResponse({"error": "no gateway is up; try again shortly"}, status_code=503)
        return JSONResponse({"url": url})

    async def exposition(_: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz),
        Route("/api/status", run_status),
        Route("/api/join", join),
        Route("/metrics", exposition),
    ]
