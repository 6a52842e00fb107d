"""Kill -9 the coordinator mid-run, start it again on the same database: nothing completed is lost."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from coordinator.models.spec import load_spec
from coordinator.models.torch_model import build_module
from coordinator.persistence.store import RoundRecord, Store

from .conftest import free_port, wait_for

pytestmark = pytest.mark.slow

CLIENTS = 3
ROUNDS = 6


def pollen(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "POLLEN_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    out = open(log, "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen([sys.executable, "-m", "coordinator", *args], stdout=out, stderr=out, env=env)


def status(port: int) -> dict:  # type: ignore[type-arg]
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=2).json()  # type: ignore[no-any-return]
    except httpx.HTTPError:
        return {}


def kill_and_resume(
    db: str,
    tmp_path: Path,
    serve: list[str] | None = None,
    env: dict[str, str] | None = None,
    token: str = "tok",
    sig: signal.Signals = signal.SIGKILL,
    learns: bool = True,
    follow_join: bool = False,
) -> tuple[list[RoundRecord], list[RoundRecord]]:
    """Run a federation, kill -9 the coordinator after two rounds, restart it, check nothing was lost.

    `serve` and `env` replace the default command line, e.g. by a compose service's command and environment.
    `learns`: the model must end better than its first round (not for runs whose noise drowns the signal).
    `follow_join`: clients are given the coordinator's http:// address and ask /api/join where to connect.
    Returns the rounds recorded before the kill and at the end.
    """
    port = free_port()
    if serve is None:
        serve = ["serve", "--db", db, "--rounds", str(ROUNDS), "--min-clients", str(CLIENTS)]
        serve += ["--local-epochs", "1", "--heartbeat-seconds", "2", "--join-token", token]
    serve = [*serve, "--port", str(port)]
    coordinator = pollen(*serve, log=tmp_path / "coordinator.log", env=env)
    url = f"http://127.0.0.1:{port}" if follow_join else f"ws://127.0.0.1:{port}/ws"
    clients = [
        pollen(
            "join",
            url,
            "--token",
            token,
            "--shard",
            f"{i + 1}/{CLIENTS}",
            "--give-up-after",
            "120",
            log=tmp_path / f"client{i}.log",
        )
        for i in range(CLIENTS)
    ]
    try:
        wait_for(lambda: status(port).get("current_round", 0) >= 2, 180, "two completed rounds")
        coordinator.send_signal(sig)
        code = coordinator.wait(timeout=60)
        if sig == signal.SIGTERM:
            # uvicorn re-raises the signal after its graceful shutdown, so the status is -SIGTERM either way;
            # what shows the shutdown ran is our lifespan hook's log line.
            assert code in (0, -signal.SIGTERM)
            assert "shutting down: run" in (tmp_path / "coordinator.log").read_text()
        store = Store(db)
        run = store.get_run()
        before = store.rounds(run.id)
        store.close()
        assert run.state == "running" and len(before) >= 2
        assert [r.round for r in before] == list(range(1, len(before) + 1))

        coordinator = pollen(*serve, log=tmp_path / "coordinator.log", env=env)
        wait_for(lambda: status(port).get("state") == "completed", 300, "the resumed run to complete")
        assert all(c.wait(timeout=60) == 0 for c in clients), "clients reconnect, finish and exit cleanly"
    finally:
        for p in [coordinator, *clients]:
            if p.poll() is None:
                p.kill()
    store = Store(db)
    after = store.rounds(run.id)
    store.close()
    assert [r.round for r in after] == list(range(1, ROUNDS + 1)), "every round exactly once"
    for old, new in zip(before, after, strict=False):
        assert (old.accuracy, old.seconds, old.clients) == (new.accuracy, new.seconds, new.clients)
    assert after[-1].accuracy is not None and before[0].accuracy is not None
    assert not learns or after[-1].accuracy > before[0].accuracy

    out = tmp_path / "model.pt"
    subprocess.run([sys.executable, "-m", "coordinator", "export", "--db", db, "-o", str(out)], check=True)
    module = build_module(load_spec("mnist-mlp"))
    module.load_state_dict(torch.load(out))
    assert all(np.isfinite(t.numpy()).all() for t in module.state_dict().values())
    return before, after


def test_kill9_and_resume_on_sqlite(tmp_path: Path) -> None:
    kill_and_resume(f"sqlite:///{tmp_path}/pollen.db", tmp_path)


@pytest.mark.postgres
def test_kill9_and_resume_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    kill_and_resume(postgres_url, tmp_path)


def test_sigterm_is_a_clean_stop_and_the_run_resumes(tmp_path: Path) -> None:
    kill_and_resume(f"sqlite:///{tmp_path}/pollen.db", tmp_path, sig=signal.SIGTERM)


def test_epsilon_never_goes_backwards_across_a_kill9(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/pollen.db"
    serve = ["serve", "--db", db, "--rounds", str(ROUNDS), "--min-clients", str(CLIENTS), "--local-epochs", "1"]
    serve += ["--heartbeat-seconds", "2", "--join-token", "tok", "--dp-clip", "1.0", "--dp-noise", "0.8"]
    serve += ["--clients-per-round", str(CLIENTS)]
    # z = 0.8 over a cohort of 3 adds noise of std 0.27 to every weight each round: accuracy is noise here
    # (it went up in one run and down in the next), and only ε is this test's subject.
    before, after = kill_and_resume(db, tmp_path, serve=serve, learns=False)
    eps = [r.epsilon if r.epsilon is not None else float("nan") for r in after]
    assert all(b > a for a, b in itertools.pairwise(eps)), f"ε rises every round, resume included: {eps}"
    assert eps[len(before)] > (before[-1].epsilon or float("inf")), "the first round after the resume spent more"
