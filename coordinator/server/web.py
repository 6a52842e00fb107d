"""The page, the dashboard and the demo data, served next to the API.

Every response carries COOP/COEP (cross-origin isolation, which WebAssembly threads and
precise timers need) and `no-cache`, so browsers revalidate instead of running a stale
trainer after an upgrade.
"""

from __future__ import annotations

import mimetypes
import os
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.data.shard_file import shard_bytes

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")

ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def web_dir() -> Path:
    return Path(os.environ.get("POLLEN_WEB_DIR", Path(__file__).resolve().parents[2] / "client_web" / "dist"))


class IsolationHeaders:
    """ASGI middleware adding the isolation and caching headers to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for k, v in ISOLATION.items():
                    headers.append((k.lower().encode(), v.encode()))
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-cache"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def _page(name: str) -> Route:
    async def handler(_: Request) -> Response:
        path = web_dir() / name
        if not path.is_file():
            return PlainTextResponse(f"the page is not built ({path} is missing): run `make setup`", status_code=503)
        return FileResponse(path, media_type="text/html")

    return Route("/" if name == "index.html" else f"/{name.removesuffix('.html')}", handler)


def demo_shard_route(num_shards: int) -> Route:
    @cache
    def shard(k: int) -> bytes:
        return shard_bytes(k, num_shards)

    async def handler(request: Request) -> Response:
        try:
            node_id = int(request.query_params["node_id"])
            if node_id < 1:
                raise ValueError
        except (KeyError, ValueError):
            return PlainTextResponse("node_id must be a positive integer", status_code=400)
        k = (node_id - 1) % num_shards + 1
        return Response(
            shard(k),
            media_type="application/octet-stream",
            headers={"x-pollen-shard": f"{k}/{num_shards}", "cache-control": "private, max-age=3600"},
        )

    return Route("/api/demo-shard", handler)


def web_routes(num_shards: int) -> list[Route | Mount]:
    return [
        _page("index.html"),
        _page("dashboard.html"),
        demo_shard_route(num_shards),
        Mount("/", StaticFiles(directory=web_dir(), check_dir=False), name="web"),
    ]
