"""Gateways on a Ray cluster (`--ray-address`): they outlive a coordinator that dies, and keep their clients.

The cluster is a `ray start --head` of its own on this machine, offering the `pollen_gateway`
resource as a gateway node would; the coordinator joins it as any driver does.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.test_resume import CLIENTS, ROUNDS, kill_and_resume

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass(frozen=True)
class RayCluster:
    address: str
    env: dict[str, str]  # what its drivers need: the token


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[RayCluster]:
    """A one-node Ray cluster with token auth."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    temp = Path("/tmp") / f"pollen-ray-{port}"  # a Unix socket path must stay short
    start = [RAY, "start", "--head", f"--port={port}", "--num-cpus=1", '--resources={"pollen_gateway": 1}']
    start += ["--include-dashboard=false", "--object-store-memory=200000000", f"--temp-dir={temp}"]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        yield RayCluster(f"127.0.0.1:{port}", env)
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_kill9_of_the_coordinator_leaves_its_gateway_and_clients_up_and_the_run_resumes(
    tmp_path: Path, ray_cluster: RayCluster
) -> None:
    """On a cluster the gateway is detached: kill -9 of the coordinator does not take it down. Its clients
    stay connected to it, with no reconnection; the restarted coordinator finds it by name, and the run
    resumes (tests/test_resume.py's checks: every round once, nothing
    lost, the model learns)."""
    db = f"sqlite:///{tmp_path}/pollen.db"
    serve = ["serve", "--db", db, "--rounds", str(ROUNDS), "--min-clients", str(CLIENTS)]
    serve += ["--local-epochs", "1", "--heartbeat-seconds", "2", "--join-token", "tok"]
    serve += ["--gateways", "1", "--ray-address", ray_cluster.address]
    serve += ["--gateway-port", str(free_port()), "--host", "127.0.0.1"]
    kill_and_resume(db, tmp_path, serve=serve, env=ray_cluster.env, follow_join=True)
    for i in range(CLIENTS):
        joined = (tmp_path / f"client{i}.log").read_text().count("joined as node")
        assert joined == 1, f"client {i} joined {joined} times: its gateway should have kept it"
