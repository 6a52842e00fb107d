"""The docker-compose deployment, checked without a Docker engine: the compose file validates, keeps its
secrets out, and the coordinator runs exactly as its service would (same command, same POLLEN_* variables)
against a real PostgreSQL, surviving kill -9."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .test_resume import kill_and_resume

ROOT = Path(__file__).resolve().parents[1]


def compose_config(env_file: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["docker-compose", "--env-file", str(env_file), "config"], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return yaml.safe_load(out.stdout)  # type: ignore[no-any-return]


def test_compose_file_validates_with_the_example_env() -> None:
    services = compose_config(ROOT / ".env.example")["services"]
    assert set(services) == {"db", "coordinator", "tls", "gateway-1", "gateway-2"}
    assert services["tls"]["profiles"] == ["tls"]  # the TLS proxy only starts with --profile tls
    assert all(services[g]["profiles"] == ["scale"] for g in ("gateway-1", "gateway-2"))  # gateways: --profile scale
    assert services["db"]["image"] == "postgres:16" and "healthcheck" in services["db"]
    assert services["coordinator"]["depends_on"]["db"]["condition"] == "service_healthy"


def test_the_tls_proxy_fronts_the_coordinator_and_every_gateway() -> None:
    # No Caddy here to load it: the Caddyfile's routes are read back and checked against the compose file.
    config = compose_config(ROOT / ".env.example")
    services = config["services"]
    assert any(v.endswith("/Caddyfile:/etc/caddy/Caddyfile:ro") for v in services["tls"]["volumes"])
    caddyfile = (ROOT / "Caddyfile").read_text()
    routes = dict(re.findall(r"handle_path (/gateway/\d+/)\*\s*\{\s*reverse_proxy (\S+)", caddyfile))
    port = services["coordinator"]["environment"]["POLLEN_GATEWAY_PORT"]
    gateways = sorted(name for name in services if name.startswith("gateway-"))
    assert routes == {f"/gateway/{name.removeprefix('gateway-')}/": f"{name}:{port}" for name in gateways}
    assert re.search(r"handle \{\s*reverse_proxy coordinator:8080", caddyfile)  # the rest: page, API, /ws
    for name in gateways:  # what /api/join hands out by default: the gateway's own published port
        published = services[name]["ports"][0]
        assert services[name]["environment"]["POLLEN_GATEWAY_URL"] == f"ws://localhost:{published['published']}/ws"


def test_compose_file_holds_no_secret_and_refuses_to_run_without_them(tmp_path: Path) -> None:
    raw = (ROOT / "docker-compose.yml").read_text()
    for secret in ("change-me", "and-this-one"):
        assert secret not in raw
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = subprocess.run(
        ["docker-compose", "--env-file", str(empty), "config"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0 and "POSTGRES_PASSWORD" in result.stderr


@pytest.mark.slow
@pytest.mark.postgres
def test_coordinator_runs_as_its_compose_service_and_resumes_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    service = compose_config(ROOT / ".env.example")["services"]["coordinator"]
    env = {k: str(v) for k, v in service["environment"].items()}
    # Only what differs between a compose network and this test: where PostgreSQL is, and a quick run.
    env |= {
        "POLLEN_DB": postgres_url,
        "POLLEN_ROUNDS": "6",
        "POLLEN_MIN_CLIENTS": "3",
        "POLLEN_LOCAL_EPOCHS": "1",
        "POLLEN_HEARTBEAT_SECONDS": "2",
    }
    # The service's shell starts a Ray head first only with POLLEN_GATEWAYS > 0; then it execs pollen serve.
    shell, flag, script = service["command"]
    assert (shell, flag) == ("sh", "-c") and env["POLLEN_GATEWAYS"] == "0"
    command = shlex.split(script.rsplit("exec ", 1)[1])
    assert command[:2] == ["pollen", "serve"]
    port_at = command.index("--port")
    serve = command[1:port_at] + command[port_at + 2 :] + ["--host", "127.0.0.1"]
    kill_and_resume(postgres_url, tmp_path, serve=serve, env=env, token=env["POLLEN_JOIN_TOKEN"])
