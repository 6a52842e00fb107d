"""Pausing and stopping a run from outside (an operator, a signal), at safe points only."""

from __future__ import annotations

import threading


class RunStopped(Exception):
    """Raised in the run loop when a stop was asked for; the run ends as `stopped`."""


class RunControl:
    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._held = False

    @property
    def paused(self) -> bool:
        return not self._running.is_set() and not self._stop.is_set()

    @property
    def held(self) -> bool:
        """True while a paused run waits between phases: the pause has taken effect, no phase is under way."""
        return self._held

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    def checkpoint(self) -> None:
        """Block while paused; raise `RunStopped` once a stop is asked for. Call between phases."""
        if not self._running.is_set():
            self._held = True
            try:
                self._running.wait()
            finally:
                self._held = False
        if self._stop.is_set():
            raise RunStopped("the run was stopped")
