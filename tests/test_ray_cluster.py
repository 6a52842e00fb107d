"""Gateways on a Ray cluster (`--ray-address`): they outlive a coordinator that dies, and keep their clients.

The cluster is two Ray nodes on this machine, as two machines would be: a head (`ray start --head`,
at 127.0.0.1), which the coordinator joins as any driver does, and a gateway node (`ray start
--address`, at 127.0.0.2) offering the `pollen_gateway` resource. Each node has its own raylet and
object store, so the weights cross from one node's store to the other's, and the gateway serves at
its own node's address, which /api/join hands to clients.
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
    """A two-node Ray cluster with token auth: the head, and a gateway node at 127.0.0.2."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    temp = Path("/tmp") / f"pollen-ray-{port}"  # a Unix socket path must stay short
    store = "--object-store-memory=100000000"
    head = [RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--node-ip-address=127.0.0.1", store]
    head += ["--include-dashboard=false", f"--temp-dir={temp}"]
    gateway_node = [RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=0", "--node-ip-address=127.0.0.2"]
    gateway_node += ['--resources={"pollen_gateway": 1}', store]
    subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
    try:
        subprocess.run(gateway_node, env=env, check=True, capture_output=True, timeout=120)
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
    serve += ["--gateway-port", str(free_port()), "--host", "0.0.0.0"]  # each on its node's own address
    kill_and_resume(db, tmp_path, serve=serve, env=ray_cluster.env, follow_join=True)
    # Both coordinators found the gateway on the other node, and the clients reached it there.
    assert (tmp_path / "coordinator.log").read_text().count("gateways: ws://127.0.0.2:") == 2
    for i in range(CLIENTS):
        joined = (tmp_path / f"client{i}.log").read_text().count("joined as node")
        assert joined == 1, f"client {i} joined {joined} times: its gateway should have kept it"
