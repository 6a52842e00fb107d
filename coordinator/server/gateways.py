"""What the coordinator needs from a pool of gateways, wherever they run (see `coordinator.cluster`).

The server layer knows gateways only through this interface, so that the coordinator
without gateways needs no Ray: `pollen serve --gateways N` builds the pool and hands the
coordinator a factory for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from coordinator.federation.nodes import Nodes
from coordinator.server.websocket import RunHost


class Gateways(Nodes, Protocol):
    def start(self) -> None:
        """Start the gateways and wait until each listens (blocking: seconds)."""
        ...

    def stop(self) -> None:
        """Stop following the gateways (and the Ray instance, if the pool started it)."""
        ...

    def describe(self) -> list[dict[str, Any]]:
        """Each gateway: id, address, clients, alive, and its last phase's bytes and seconds (public)."""
        ...

    def join_url(self) -> str | None:
        """The WebSocket URL of the live gateway with the fewest clients; None if none is live."""
        ...


GatewayFactory = Callable[[RunHost], Gateways]
