"""Which gated connections have something to read, without reading it (see `inbound`).

A gated connection's transport is paused, so the event loop no longer watches its socket.
`EpollWatcher` keeps those sockets in an epoll set of its own, and the event loop watches
that one descriptor: a socket that turns readable (data, or its peer closing) is reported
once and dropped from the set. Linux only; elsewhere there is no watcher, and the budget
only parks (see `inbound`).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import Callable

from coordinator.server.inbound import Reader, Watcher


class EpollWatcher:
    def __init__(self) -> None:
        self._epoll: select.epoll | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._by_fd: dict[int, tuple[Reader, Callable[[Reader], None]]] = {}
        self._fd_of: dict[Reader, int] = {}

    def watch(self, reader: Reader, readable: Callable[[Reader], None]) -> bool:
        fd = reader.fileno()
        if fd < 0:
            return False
        if self._epoll is None:
            self._epoll = select.epoll()
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._epoll.fileno(), self._poll)
        try:
            self._epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        except OSError:
            return False
        self._by_fd[fd] = (reader, readable)
        self._fd_of[reader] = fd
        return True

    def unwatch(self, reader: Reader) -> None:
        fd = self._fd_of.pop(reader, None)
        if fd is None or self._by_fd.get(fd, (None,))[0] is not reader:
            return
        del self._by_fd[fd]
        if self._epoll is not None:
            with contextlib.suppress(OSError):  # closed already: the kernel dropped it from the set
                self._epoll.unregister(fd)

    def ready_now(self) -> list[Reader]:
        if self._epoll is None:
            return []
        ready = []
        for fd, _events in self._epoll.poll(0):
            reader, readable = self._by_fd.get(fd, (None, None))
            if reader is None:
                with contextlib.suppress(OSError):
                    self._epoll.unregister(fd)
                continue
            self.unwatch(reader)
            ready.append((reader, readable))
        return [reader for reader, _ in ready]

    def _poll(self) -> None:
        assert self._epoll is not None
        for fd, _events in self._epoll.poll(0):
            reader, readable = self._by_fd.get(fd, (None, None))
            if reader is None or readable is None:
                with contextlib.suppress(OSError):
                    self._epoll.unregister(fd)
                continue
            self.unwatch(reader)
            readable(reader)

    def close(self) -> None:
        if self._epoll is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None


def readiness_watcher() -> Watcher | None:
    """An epoll watcher where the platform has epoll; None elsewhere (the budget then only parks)."""
    return EpollWatcher() if hasattr(select, "epoll") else None
