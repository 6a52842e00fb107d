"""Secrets stay secret: not in the access log, not in the runs table, not on public endpoints."""

from __future__ import annotations

import asyncio
import logging

import httpx
from websockets.asyncio.client import connect

from coordinator.logs import redact_tokens
from coordinator.protocol import Hello, Welcome, decode, encode
from coordinator.server.app import Coordinator
from coordinator.serving import BackgroundServer
from coordinator.settings import Settings, redact_url, storable_settings

from .conftest import StartCoordinator


def _base(server: BackgroundServer) -> str:
    return server.url.replace("ws://", "http://").removesuffix("/ws")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_the_access_log_never_records_a_token(start_coordinator: StartCoordinator) -> None:
    _, server = start_coordinator(join_token="join-secret", min_clients=50)
    access = logging.getLogger("uvicorn.access")
    handler, level = Lines(), access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        async with httpx.AsyncClient(base_url=_base(server)) as http:
            await http.get("/?token=join-secret")
            await http.get("/healthz?x=1&Token=join-secret&y=2")
            await http.get("/healthz?page=2")
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    text = "\n".join(handler.lines)
    assert len(handler.lines) == 3 and "join-secret" not in text, text
    assert '"GET /?[redacted] HTTP/1.1"' in text and "/healthz?page=2" in text


def test_redaction_masks_every_query_that_mentions_a_token() -> None:
    assert redact_tokens('1.2.3.4 - "GET /?token=abc HTTP/1.1" 200') == '1.2.3.4 - "GET /?[redacted] HTTP/1.1" 200'
    assert redact_tokens("/ws?a=1&access_token=abc") == "/ws?[redacted]"
    assert redact_tokens("/dashboard?page=2") == "/dashboard?page=2"


def test_stored_settings_drop_tokens_and_the_database_password() -> None:
    settings = Settings(db="postgresql://pollen:hunter2@db:5432/pollen", join_token="j", admin_token="a")
    stored = storable_settings(settings.to_dict())
    assert "join_token" not in stored and "admin_token" not in stored
    assert stored["db"] == "postgresql://pollen:***@db:5432/pollen"
    assert "hunter2" not in str(stored)
    assert redact_url("sqlite:///pollen.db") == "sqlite:///pollen.db"
    assert "hunter2" not in redact_url("postgresql://u:hunter2@[bad")


def test_a_resumed_run_takes_its_tokens_from_the_invocation_not_the_database(tmp_path) -> None:
    db = f"sqlite:///{tmp_path}/p.db"
    first = Coordinator(Settings(db=db, join_token="old-join", admin_token="old-admin", min_clients=50))
    run_id = first.run_loop.run.id
    assert "old-join" not in str(first.store.get_run(run_id).settings)
    assert "old-admin" not in str(first.store.get_run(run_id).settings)
    first.store.close()
    again = Coordinator(Settings(db=db, join_token="new-join", admin_token="new-admin", min_clients=50))
    try:
        assert again.run_loop.run.id == run_id
        assert (again.settings.join_token, again.settings.admin_token) == ("new-join", "new-admin")
        assert again.limits.join_token == "new-join" and again.admin_token == "new-admin"
    finally:
        again.store.close()


async def test_the_public_status_names_no_client_and_the_admin_view_needs_the_token(start_coordinator) -> None:
    _, server = start_coordinator(admin_token="admin-secret", min_clients=50)
    ws = await connect(server.url)
    await ws.send(encode(Hello([1], None, None, "webgpu", 1 << 24, "Firefox/1")))
    while not isinstance(welcome := decode(await asyncio.wait_for(ws.recv(decode=False), 30)), Welcome):
        pass
    assert welcome.secret is not None
    port = str(ws.local_address[1])
    async with httpx.AsyncClient(base_url=_base(server)) as http:
        status = await http.get("/api/status")
        assert status.json()["clients_connected"] == 1 and status.json()["clients_by_backend"] == {"webgpu": 1}
        for secret in (welcome.client_id, welcome.secret, "127.0.0.1", port, "Firefox"):
            assert secret not in status.text
        assert (await http.get("/api/admin/clients")).status_code == 401
        assert (await http.get("/api/admin/clients", headers={"Authorization": "Bearer nope"})).status_code == 401
        [client] = (await http.get("/api/admin/clients", headers={"Authorization": "Bearer admin-secret"})).json()
    assert (client["node_id"], client["client_id"], client["backend"]) == (welcome.node_id, welcome.client_id, "webgpu")
    assert client["address"] == f"127.0.0.1:{port}" and client["agent"] == "Firefox/1"
    assert welcome.secret not in str(client)
    await ws.close()
