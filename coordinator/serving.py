"""Running the coordinator's ASGI app under uvicorn, in the foreground or in a thread."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette

from coordinator.logs import RedactTokens
from coordinator.server.app import Coordinator
from coordinator.server.inbound import InboundBudget
from coordinator.server.readiness import readiness_watcher
from coordinator.server.transport import RECEIVE_BUFFER_BYTES, flow_controlled_websocket, request_deadline_protocol
from coordinator.settings import Settings


def _config(coordinator: Coordinator, log_level: str) -> uvicorn.Config:
    return uvicorn_config(coordinator.app(), coordinator.settings, log_level)


def uvicorn_config(app: Starlette, settings: Settings, log_level: str) -> uvicorn.Config:
    """How an app that serves clients runs under uvicorn: a coordinator's, or a gateway's."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        # Our protocol enforces max_frame_bytes with a clear error frame; this cap only stops abuse.
        ws_max_size=4 * settings.max_frame_bytes,
        ws_ping_interval=None,
        ws_per_message_deflate=False,
        ws=flow_controlled_websocket(InboundBudget(settings.max_receiving_bytes, readiness_watcher())),
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
        http=request_deadline_protocol(settings.request_timeout),
        lifespan="on",
    )
    # After Config, which (re)configures uvicorn's loggers: the access log and the WebSocket
    # log lines carry request paths, and a page URL may carry the join token.
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
    return config


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound; its connections inherit its capped receive buffer (`RECEIVE_BUFFER_BYTES`).

    Set before `listen`, the cap also sizes the window scale each connection negotiates. (Set on a
    connection's own socket after the upgrade, through uvloop's transport, it slowed rounds tenfold.)
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    sock.bind((host, port))
    return sock


def serve_forever(coordinator: Coordinator, log_level: str = "info") -> None:
    settings = coordinator.settings
    uvicorn.Server(_config(coordinator, log_level)).run(sockets=[listening_socket(settings.host, settings.port)])


class BackgroundServer:
    """uvicorn in a thread, on a socket bound before start (so port 0 picks a free port)."""

    def __init__(self, coordinator: Coordinator, log_level: str = "warning") -> None:
        settings = coordinator.settings
        self.sock = listening_socket(settings.host, settings.port)
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(_config(coordinator, log_level))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://{self.sock.getsockname()[0]}:{self.port}/ws"

    def start(self, timeout: float = 30) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the coordinator's HTTP server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
