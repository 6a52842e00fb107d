"""The end of a local Ray instance's processes, once the coordinator that started it is gone, kill -9 included.

Ray ends most of a local instance's processes with its driver, but not all: after a kill -9
of `pollen serve --gateways N`, its dashboard agent and runtime-env agent log that their
raylet is dead and then hang (about 190 MB between them, here; ray-project/ray#59162), and
each restart of the coordinator would leave two more.

So, before it starts a local instance, the coordinator starts this module as a process of
its own, and marks its environment, which the instance's processes inherit, with
`OWNER_ENV` (its pid and a random tag). The reaper notes the coordinator's descendants
every `SCAN_SECONDS` (Ray's agents rename themselves, which clobbers the environment they
show in /proc, so the mark alone would miss them), and when its parent, the coordinator,
is gone it kills every process it noted that is still the same process (same start time),
and every process that carries the mark. A coordinator that stops cleanly has shut Ray down
already: the reaper then finds nothing, or the agents that hang on their way out. Linux
only (it reads /proc); elsewhere it finds nothing to do.

    python -m coordinator.cluster.reaper PARENT_PID   (started by `watch`, never by hand)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

OWNER_ENV = "POLLEN_RAY_OWNER"
POLL_SECONDS = 0.5
SCAN_SECONDS = 2.0
PROC = Path("/proc")


def watch() -> subprocess.Popen[bytes]:
    """Mark this process's environment for the Ray instance it is about to start, and start its reaper."""
    os.environ[OWNER_ENV] = f"{os.getpid()}-{secrets.token_hex(8)}"
    return subprocess.Popen(
        [sys.executable, "-m", "coordinator.cluster.reaper", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # not in the coordinator's process group: a signal to the group spares it
    )


def _pids() -> list[int]:
    return [int(e.name) for e in PROC.iterdir() if e.name.isdigit()] if PROC.is_dir() else []


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of `pid`, or None if it is gone."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[19])  # proc(5): ppid, starttime


def _same(pid: int, started: int) -> bool:
    """Whether `pid` still runs the process that started at `started` (not a new one given its pid)."""
    stat = _stat(pid)
    return stat is not None and stat[1] == started


def marked(mark: str) -> list[int]:
    """The pids of the processes whose environment carries `OWNER_ENV=mark`."""
    wanted = f"{OWNER_ENV}={mark}".encode()
    found = []
    for pid in _pids():
        try:
            environ = (PROC / str(pid) / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if wanted in environ.split(b"\0"):
            found.append(pid)
    return found


def descendants(root: int) -> dict[int, int]:
    """pid → start time of every process below `root` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None:
            children.setdefault(stat[0], []).append(pid)
            started[pid] = stat[1]
    found: dict[int, int] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found[child] = started[child]
            stack.append(child)
    return found


def reap(mark: str, noted: dict[int, int] | None = None) -> None:
    """Kill every process marked `mark`, and every one of `noted` (pid → start time) still running, but this one."""
    targets = set(marked(mark)) | {pid for pid, started in (noted or {}).items() if _same(pid, started)}
    for pid in sorted(targets - {os.getpid()}):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def main() -> None:
    mark = os.environ.get(OWNER_ENV)
    if not mark or len(sys.argv) != 2:
        sys.exit(f"usage: {OWNER_ENV}=MARK python -m coordinator.cluster.reaper PARENT_PID (the coordinator starts it)")
    parent = int(sys.argv[1])  # given, not read: the parent may be gone before this interpreter is up
    noted: dict[int, int] = {}
    scanned = 0.0
    while os.getppid() == parent:
        if time.monotonic() - scanned >= SCAN_SECONDS:
            # Keep those noted before that still run: a process whose parent died is no descendant now.
            still = {p: t for p, t in noted.items() if _same(p, t)}
            noted = {**still, **descendants(parent)}
            scanned = time.monotonic()
        time.sleep(POLL_SECONDS)
    reap(mark, noted)


if __name__ == "__main__":
    main()
