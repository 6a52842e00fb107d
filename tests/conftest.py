"""Shared fixtures: an in-process coordinator on a free port, and a throwaway PostgreSQL server."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from glob import glob
from pathlib import Path
from typing import Any

import pytest

from coordinator.server.app import Coordinator
from coordinator.serving import BackgroundServer
from coordinator.settings import Settings

StartCoordinator = Callable[..., tuple[Coordinator, BackgroundServer]]


@pytest.fixture
def start_coordinator(tmp_path: Path) -> Iterator[StartCoordinator]:
    started: list[tuple[Coordinator, BackgroundServer]] = []

    def start(**overrides: Any) -> tuple[Coordinator, BackgroundServer]:
        settings = Settings(**{"db": f"sqlite:///{tmp_path}/pollen.db", "port": 0, **overrides})
        coordinator = Coordinator(settings)
        server = BackgroundServer(coordinator)
        server.start()
        started.append((coordinator, server))
        return coordinator, server

    yield start
    for coordinator, server in started:
        server.stop()
        coordinator.store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL (Debian's package, installed by set-up) on loopback, owned by this test session."""
    bins = sorted(glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        pytest.fail("PostgreSQL is not installed: run `bash scripts/setup.sh`")
    bindir = Path(bins[-1])
    # Not under pytest's tmp dir: that is private to root, and the server runs as `postgres`.
    data = Path(tempfile.mkdtemp(prefix="pollen-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(data, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_postgres, *args], check=True, capture_output=True)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "pollen", "--auth=trust")
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(data / "log"),
        "-w",
        "-o",
        f"-h 127.0.0.1 -p {port} -k {data}",
        "start",
    )
    try:
        yield f"postgresql://pollen@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
