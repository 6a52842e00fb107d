"""The coordinator's side of its gateways: Ray actors it starts, registers clients for, and sends phases to.

`GatewayPool` is the federation core's `Nodes` (the clients behind every live gateway) and
`Shards` (a phase goes to each gateway whole). Per gateway, one thread long-polls its events:
hellos to register in the database (the coordinator stays its only writer) and the nodes
connected there. Per phase, the weights are put in Ray's object store once and every gateway
with nodes in the cohort runs its part (`Gateway.run_phase`); a gateway that dies meanwhile
answers with every one of its tasks failed, and Ray restarts it (`max_restarts=-1`): its
server comes back on the same port, its clients reconnect through `/api/join`, and the next
round uses it.

A task is never retried by Ray (`max_task_retries=0`): a phase re-run on a restarted gateway
would count its clients twice.

On a cluster (`--ray-address`) the gateways are detached actors: a coordinator that dies
(kill -9) leaves them serving their clients, and started again it finds them by name, ends
the phases the dead one left under way (`Gateway.end_phases`) and goes on with the same
connections. A coordinator that stops (SIGTERM) takes them down. A local Ray instance is the
coordinator's own and dies with it, gateways included (`reaper` ends what Ray leaves); their
clients come back through `/api/join` to the new ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from flwr.common.constant import ErrorCode as FlowerErrorCode

from coordinator.cluster import reaper
from coordinator.cluster.gateway import Gateway, GatewayEvents, JoinRequest, RunView
from coordinator.federation.broadcast import Broadcast
from coordinator.federation.shards import Partial, ShardTask
from coordinator.persistence.store import Registration
from coordinator.protocol.messages import Error
from coordinator.protocol.tensors import Tensors
from coordinator.server.websocket import RunHost
from coordinator.settings import Settings

log = logging.getLogger(__name__)

NAMESPACE = "pollen"
POLL_SECONDS = 1.0  # how long a gateway holds the coordinator's events call when nothing happens
DEAD_RETRY_SECONDS = 1.0
GATEWAY_RESOURCE = "pollen_gateway"
LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2  # Ray's default is 30% of the machine's memory


@dataclass
class GatewayState:
    """What the coordinator knows of one gateway."""

    index: int
    actor: Any
    url: str
    alive: bool = False
    nodes: set[int] = field(default_factory=set)
    view: RunView | None = None  # the run view it last acknowledged
    promised: list[float] = field(default_factory=list)  # when /api/join sent clients here (not yet joined)
    last_phase_bytes: int = 0
    last_phase_seconds: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.index,
            "address": self.url,
            "clients": len(self.nodes),
            "alive": self.alive,
            "last_phase_bytes": self.last_phase_bytes,
            "last_phase_seconds": round(self.last_phase_seconds, 3),
        }


class GatewayPool:
    def __init__(self, settings: Settings, host: RunHost) -> None:
        """`host`: the coordinator, which registers clients and names the current run."""
        self.settings = settings
        self.host = host
        self._lock = threading.Lock()
        self._listeners: list[Callable[[int], None]] = []
        self._gateways: list[GatewayState] = []
        self._stop = threading.Event()
        self._started_ray = False
        self._local = True  # a Ray instance of our own (no --ray-address)
        self._reaper: subprocess.Popen[bytes] | None = None  # ends its processes if we die (see `reaper`)
        self._followers: list[threading.Thread] = []
        self._home: dict[int, int] = {}  # node id → the gateway it last joined through
        # Phases under way at gateways: task id → (the gateways still running it, where progress goes).
        self._running: dict[str, tuple[set[int], Callable[[int, int], None]]] = {}

    # Life --------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or join) Ray, start the gateways and wait until each listens."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        address = self.settings.ray_address or None  # an empty POLLEN_RAY_ADDRESS is none
        self._local = local = address is None
        if local:
            # A local instance of our own: a token of our own, which its processes inherit. Ray reads
            # these when it is imported, so they are set first. Its processes carry our mark too, for
            # the reaper to end those that outlive us (see `reaper`).
            os.environ.setdefault("RAY_AUTH_MODE", "token")
            os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
            self._reaper = reaper.watch()
        import ray

        if not ray.is_initialized():
            ray.init(
                address=address,
                namespace=NAMESPACE,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                # Gateways take no CPU slot (num_cpus=0); the object store holds a round's weights and partials.
                num_cpus=1 if local else None,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES if local else None,
            )
            self._started_ray = True
        actor = ray.remote(Gateway)
        base = self.settings.gateway_port or self.settings.port + 1
        for i in range(self.settings.gateways):
            # On one machine gateway i takes port base + i. On a cluster each takes a node that offers
            # the `pollen_gateway` resource (`ray start --resources='{"pollen_gateway": 1}'`), one per
            # node, all on the same port.
            placement = {} if local else {"resources": {GATEWAY_RESOURCE: 1}}
            # On a cluster a gateway outlives a coordinator that dies (detached): its clients stay connected,
            # and the coordinator, restarted, finds it again by name. A local Ray instance dies with us.
            handle = actor.options(
                name=f"gateway-{i}",
                get_if_exists=True,
                lifetime=None if local else "detached",
                num_cpus=0,
                max_restarts=-1,
                max_task_retries=0,
                max_concurrency=1000,
                **placement,
            ).remote(i, self._gateway_settings(), self.settings.host, base + i if local else base)
            self._gateways.append(GatewayState(i, handle, ""))
        for g in self._gateways:
            g.url = ray.get(g.actor.url.remote(), timeout=120)
            ended = ray.get(g.actor.end_phases.remote(), timeout=30)
            if ended:
                log.warning("gateway %d was still running %d phase(s) of a previous coordinator: ended", g.index, ended)
            g.alive = True
            follower = threading.Thread(target=self._follow, args=(g,), name=f"pollen-gateway-{g.index}", daemon=True)
            follower.start()
            self._followers.append(follower)
        log.info("gateways: %s", ", ".join(g.url for g in self._gateways))

    def _gateway_settings(self) -> dict[str, Any]:
        """What a gateway needs to serve: the connection limits and the join token, not the database or admin token."""
        return {**self.settings.to_dict(), "db": "sqlite://", "admin_token": None}

    def stop(self) -> None:
        import ray

        self._stop.set()
        for follower in self._followers:  # each is back from its long poll within POLL_SECONDS
            follower.join(timeout=POLL_SECONDS + 10)
        if not self._local:  # a stop, not a crash: detached gateways would outlive the service
            for g in self._gateways:
                with contextlib.suppress(Exception):
                    ray.kill(g.actor, no_restart=True)
        if self._started_ray:
            ray.shutdown()
        if self._reaper is not None:  # shut down, the instance needs no reaper; anything of it still marked goes
            self._reaper.kill()
            self._reaper.wait()
            self._reaper = None
            reaper.reap(os.environ[reaper.OWNER_ENV])

    # Nodes ------------------------------------------------------------------------------
    def node_ids(self) -> list[int]:
        with self._lock:
            # A client that moved to another gateway is listed by the old one until its next report.
            return sorted({n for g in self._gateways if g.alive for n in g.nodes})

    def count(self) -> int:
        return len(self.node_ids())

    def send_task(self, node_id: int, task_id: str, task: Broadcast) -> bool:
        """A pool takes whole phases (`send_phase`); the grid never sends it single tasks. False: not sent."""
        return False

    def reject(self, node_id: int, error: Error) -> bool:
        g = self._gateway_of(node_id)
        if g is None:
            return False
        g.actor.reject.remote(node_id, error)
        return True

    def on_lost(self, listener: Callable[[int], None]) -> None:
        self._listeners.append(listener)

    def off_lost(self, listener: Callable[[int], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def close_all(self, *, going_away: bool = False) -> None:
        for g in self._gateways:
            if g.alive:
                g.actor.close_all.remote(going_away)

    # Shards -----------------------------------------------------------------------------
    def send_phase(
        self,
        task: ShardTask,
        weights: Tensors,
        on_partial: Callable[[Partial], None],
        on_progress: Callable[[int, int], None],
    ) -> None:
        import ray

        by_gateway: dict[int, list[int]] = {}
        unplaced: list[int] = []
        for node_id in task.nodes:
            g = self._gateway_of(node_id)
            (by_gateway.setdefault(g.index, []) if g is not None else unplaced).append(node_id)
        if unplaced:
            on_partial(Partial.failed(replace(task, nodes=tuple(unplaced)), "client disconnected", _UNAVAILABLE))
        if not by_gateway:
            return
        ref = ray.put(weights)  # once per phase, whatever the number of gateways
        with self._lock:
            self._running[task.task_id] = (set(by_gateway), on_progress)
        for index, nodes in by_gateway.items():
            part = replace(task, nodes=tuple(nodes))  # the whole quorum: `on_progress` and `end_phase` share it
            g = self._gateways[index]
            pending = g.actor.run_phase.remote(part, ref)
            threading.Thread(target=self._await_partial, args=(g, part, pending, on_partial), daemon=True).start()

    def _await_partial(
        self, g: GatewayState, task: ShardTask, pending: Any, on_partial: Callable[[Partial], None]
    ) -> None:
        import ray

        try:
            partial: Partial = ray.get(pending)
        except ray.exceptions.RayError as exc:
            log.warning(
                "gateway %d failed during a phase (%s): its %d tasks fail", g.index, type(exc).__name__, len(task.nodes)
            )
            partial = Partial.failed(task, f"gateway {g.index} failed", _UNAVAILABLE)
        if partial.report is not None:
            g.last_phase_bytes = partial.report.bytes_in + partial.report.bytes_out
            g.last_phase_seconds = partial.report.seconds
        partial.shard = g.index
        with self._lock:
            running, _ = self._running.get(task.task_id, (set(), None))
            running.discard(g.index)
            if not running:
                self._running.pop(task.task_id, None)
        on_partial(partial)

    def end_phase(self, task_id: str) -> None:
        with self._lock:
            running, _ = self._running.get(task_id, (set(), None))
            gateways = [self._gateways[i] for i in running]
        for g in gateways:
            g.actor.end_phase.remote(task_id)  # a gateway that died meanwhile answers its partial failed

    # Status -----------------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [g.describe() for g in self._gateways]

    def join_url(self) -> str | None:
        """The WebSocket URL of the live gateway with the fewest clients (None if none is live)."""
        now = time.monotonic()
        with self._lock:
            live = [g for g in self._gateways if g.alive]
            if not live:
                return None
            for g in live:  # a client sent somewhere either said hello within the hello timeout, or never will
                g.promised = [t for t in g.promised if now - t < self.settings.hello_timeout]
            chosen = min(live, key=lambda g: len(g.nodes) + len(g.promised))
            chosen.promised.append(now)
            return chosen.url

    # Internals ---------------------------------------------------------------------------
    def _gateway_of(self, node_id: int) -> GatewayState | None:
        """The live gateway a node is connected to; where it joined last, if two still list it."""
        with self._lock:
            home = self._home.get(node_id)
            if home is not None and self._gateways[home].alive and node_id in self._gateways[home].nodes:
                return self._gateways[home]
            return next((g for g in self._gateways if g.alive and node_id in g.nodes), None)

    def _follow(self, g: GatewayState) -> None:
        """One gateway's events, for as long as the pool runs: registrations, nodes, and its death and return."""
        import ray

        while not self._stop.is_set():
            try:
                update, weights = self.host.encodings
                view = RunView(self.host.run_id, update, weights, self.host.run_over)
                if g.view is None:  # back from a restart, perhaps on another machine
                    g.url = ray.get(g.actor.url.remote(), timeout=120)
                if g.view != view:
                    ray.get(g.actor.configure.remote(view), timeout=30)
                    g.view = view
                events: GatewayEvents = ray.get(g.actor.events.remote(POLL_SECONDS), timeout=POLL_SECONDS + 30)
            except Exception as exc:  # RayError: the gateway is down; anything else must not end this thread
                if g.alive:
                    log.warning("gateway %d is down (%s); Ray restarts it", g.index, type(exc).__name__)
                self._set_nodes(g, set(), alive=False)
                g.view = None
                time.sleep(DEAD_RETRY_SECONDS)
                continue
            if events.joins:
                g.actor.admit.remote({j.ticket: self._register(g, j) for j in events.joins})
                with self._lock:
                    del g.promised[: len(events.joins)]
            self._set_nodes(g, set(events.nodes), alive=True)
            for task_id, accepted in events.progress.items():
                with self._lock:
                    _, on_progress = self._running.get(task_id, (set(), None))
                if on_progress is not None:
                    on_progress(g.index, accepted)

    def _register(self, g: GatewayState, join: JoinRequest) -> Registration | str:
        try:
            who = self.host.register_client(join.hello)
            with self._lock:
                self._home[who.node_id] = g.index
            return who
        except Exception as exc:  # the database is down: this hello fails, the client retries
            log.exception("could not register a client")
            return f"registration failed ({type(exc).__name__})"

    def _set_nodes(self, g: GatewayState, nodes: set[int], *, alive: bool) -> None:
        with self._lock:
            gone = g.nodes - nodes
            g.nodes, g.alive = nodes, alive
        for node_id in gone:
            for listener in list(self._listeners):
                listener(node_id)


_UNAVAILABLE = FlowerErrorCode.NODE_UNAVAILABLE
