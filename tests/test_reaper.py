"""The reaper ends what a coordinator's local Ray instance leaves behind when the coordinator is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.cluster.reaper import OWNER_ENV, SCAN_SECONDS, descendants, marked
from tests.conftest import wait_for

# A stand-in for `pollen serve --gateways N`: it starts its reaper as the pool does, then a process that
# inherits its mark (as Ray's do) and, below a shell, one whose environment lacks it (as Ray's agents show
# theirs in /proc once they have renamed themselves).
COORDINATOR = """
import os, subprocess, sys, time
from coordinator.cluster import reaper
reaper.watch()
marked = subprocess.Popen(["sleep", "600"])
shell = subprocess.Popen(["sh", "-c", "env -u POLLEN_RAY_OWNER sleep 600 & echo $!; wait"], stdout=subprocess.PIPE)
print(marked.pid, shell.stdout.readline().decode().strip(), os.environ[reaper.OWNER_ENV], flush=True)
time.sleep(600)
"""


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, waiting for init to reap it


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="the reaper reads /proc (Linux)")
def test_a_killed_coordinators_processes_are_ended_and_nothing_else() -> None:
    bystander = subprocess.Popen(["sleep", "600"])  # not the coordinator's
    coordinator = subprocess.Popen([sys.executable, "-c", COORDINATOR], stdout=subprocess.PIPE, text=True)
    assert coordinator.stdout is not None
    first, second, mark = coordinator.stdout.readline().split()
    ours, unmarked = int(first), int(second)
    try:
        wait_for(lambda: unmarked not in marked(mark), 10, "env to run sleep without the mark")
        assert ours in marked(mark)
        assert unmarked in descendants(coordinator.pid)
        reapers = [p for p in descendants(coordinator.pid) if b"coordinator.cluster.reaper" in _cmdline(p)]
        assert len(reapers) == 1 and reapers[0] in marked(mark)  # the reaper carries the mark too
        time.sleep(SCAN_SECONDS + 0.5)  # the reaper has noted the coordinator's descendants
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait(10)
        wait_for(lambda: not _alive(ours), 10, "the marked process to be killed")
        wait_for(lambda: not _alive(unmarked), 10, "the unmarked descendant to be killed")
        wait_for(lambda: not any(_alive(p) for p in reapers), 10, "the reaper to exit")
        assert _alive(bystander.pid), "a process that is not the coordinator's is left alone"
    finally:
        bystander.kill()
        coordinator.kill()
        for pid in (ours, unmarked):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_reaper_refuses_to_run_without_a_mark() -> None:
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    command = [sys.executable, "-m", "coordinator.cluster.reaper", str(os.getpid())]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 1 and OWNER_ENV in done.stderr
