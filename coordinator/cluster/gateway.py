"""A gateway: a WebSocket endpoint of its own, on its own machine, that aggregates its own clients.

It runs as a Ray actor (`GatewayPool` starts it) and serves protocol v1 exactly as the
coordinator's `/ws` does, with the same connection code (`serve_connection`): the same
limits, outbox, inbound budget and checks. What differs is where decisions are made:

* joining: the coordinator is the only writer to the database, so a hello waits here while
  the coordinator registers it (`joins` hands the waiting hellos over, `admit` answers them);
* a phase: the coordinator sends the task once (`run_phase`), with the weights through
  Ray's object store; the gateway sends it to its nodes of the cohort, checks and folds
  their replies in its own `Phase`, and answers with one `Partial`. The quorum is the
  coordinator's to judge, across gateways: each reports how many updates it has accepted
  (`events`), and is told to end the phase (`end_phase`) once they add up to it.

Every method is `async`: a plain method of an async actor would run on the event loop and
stop the WebSocket server while it ran.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from flwr.supercore.task_identity import TaskIdentity
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from coordinator.federation.open_phases import OpenPhases
from coordinator.federation.phase import Phase
from coordinator.federation.replies import Lost
from coordinator.federation.shards import Partial, ShardTask
from coordinator.persistence.store import Registration
from coordinator.protocol.encodings import Encoding
from coordinator.protocol.messages import Error, Hello, Result
from coordinator.protocol.tensors import Tensors
from coordinator.server.clients import ClientRegistry
from coordinator.server.limits import ConnectionGate, ConnectionLimits
from coordinator.server.metrics import Metrics
from coordinator.server.websocket import RegistrationUnavailable, serve_connection
from coordinator.serving import listening_socket, uvicorn_config
from coordinator.settings import Settings

log = logging.getLogger(__name__)

PUBLIC_URL_ENV = "POLLEN_GATEWAY_URL"
JOIN_TIMEOUT_SECONDS = 30.0  # a hello the coordinator has not registered by then fails (the client retries)
PROGRESS_BATCH_SECONDS = 0.1  # replies that come in this close together are reported together


@dataclass(frozen=True)
class JoinRequest:
    """A hello waiting for the coordinator to register it."""

    ticket: str  # random: an answer meant for a gateway's previous life cannot reach another client
    hello: Hello


@dataclass
class GatewayEvents:
    """What changed at a gateway since the coordinator last asked (`Gateway.events`)."""

    joins: list[JoinRequest] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)  # every node connected now
    progress: dict[str, int] = field(default_factory=dict)  # updates accepted so far, by open phase with a quorum


@dataclass(frozen=True)
class RunView:
    """What a gateway's connections need to know of the coordinator's current run."""

    run_id: str = ""
    update_encoding: Encoding = "fp32"
    weights_encoding: Encoding = "fp32"
    over: bool = False


class Gateway:
    """The actor's body; see the module docstring. Construct it inside a running event loop."""

    def __init__(self, index: int, settings: dict[str, Any], host: str, port: int) -> None:
        self.index = index
        self.settings = Settings.from_dict(settings)
        self.metrics = Metrics()
        self.clients = ClientRegistry(self.metrics)
        self.limits = ConnectionLimits.from_settings(self.settings)
        self.gate = ConnectionGate(self.limits)
        self.view = RunView()
        self._waiting: dict[str, tuple[JoinRequest, concurrent.futures.Future[Registration]]] = {}
        self._handed: set[str] = set()  # tickets given to the coordinator, not yet answered
        self._news = asyncio.Event()
        self._lock = threading.Lock()  # the waiting hellos: worker threads add them, the loop hands them over
        self._open = OpenPhases()
        self._progress_sent: dict[str, int] = {}
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
        self._loop = loop = asyncio.get_running_loop()
        self.clients.bind_loop(loop)
        self.clients.on_away(self._open.away)  # a resumable client's tasks wait for it here (SPEC §4.2)
        self.clients.on_lost(self._open.lost)
        # Bound to every interface, it is reached at its machine's address in the cluster.
        self._host = host if host not in ("0.0.0.0", "::", "") else _node_ip()
        self._sock = listening_socket(host, port)
        self.port = int(self._sock.getsockname()[1])
        self._server = uvicorn.Server(uvicorn_config(self._app(), self.settings, "warning"))
        self._serving = loop.create_task(self._server.serve(sockets=[self._sock]))

    # Called by the coordinator (through Ray) --------------------------------------
    async def url(self) -> str:
        """Where clients reach it, once the server listens: `POLLEN_GATEWAY_URL` from its node's
        environment (a public name, or a proxy in front), else ws://its-address:port/ws."""
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
                raise RuntimeError(f"gateway {self.index} stopped serving")
            await asyncio.sleep(0.01)
        return os.environ.get(PUBLIC_URL_ENV) or f"ws://{self._host}:{self.port}/ws"

    async def configure(self, view: RunView) -> None:
        """The coordinator's current run (its id and encodings), for welcomes."""
        self.view = view
        if view.over:
            self.clients.close_all()

    async def events(self, wait: float) -> GatewayEvents:
        """Hellos to register, the connected nodes, and the phases' progress; waits up to `wait` s for news.

        Progress alone is answered after `PROGRESS_BATCH_SECONDS`, so that a thousand replies are a
        few reports, not a thousand.
        """
        with self._lock:
            idle = not self._pending()
        if idle and self._progress() == self._progress_sent:
            self._news.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), wait)
            with self._lock:
                progress_only = not self._pending()
            if progress_only and self._progress() != self._progress_sent:
                await asyncio.sleep(PROGRESS_BATCH_SECONDS)
        with self._lock:
            joins = self._pending()
            self._handed.update(j.ticket for j in joins)
        self._progress_sent = progress = self._progress()
        return GatewayEvents(joins, self.clients.node_ids(), progress)

    async def admit(self, answers: dict[str, Registration | str]) -> None:
        """The coordinator's answers to hellos: a registration, or why it failed."""
        for ticket, answer in answers.items():
            with self._lock:
                self._handed.discard(ticket)
                _, future = self._waiting.pop(ticket, (None, None))
            if future is None or future.done():
                continue
            if isinstance(answer, str):
                future.set_exception(RuntimeError(answer))
            else:
                future.set_result(answer)

    async def run_phase(self, task: ShardTask, weights: Tensors) -> Partial:
        """Send `task` to its nodes here, take their replies in until done or the deadline, and answer."""
        phase = Phase.for_shard(task, weights, self._refuse)
        with self._open.cond:
            self._open.phases[task.task_id] = phase
        try:
            for node_id in task.nodes:
                if not self.clients.send_task(node_id, task.task_id, phase.frame):
                    self._open.take(phase, node_id, Lost())
            await asyncio.to_thread(self._open.wait, [phase], task.timeout)
        finally:  # cancelled too (its caller died): the clients are told, and the phase is not kept
            with self._open.cond:
                phase.close(timeout=task.timeout)
                self._open.phases.pop(task.task_id, None)
        with self._open.cond:
            partial = phase.partial()
        phase.report.bytes_out = phase.frame.bytes_out
        phase.report.seconds = time.time() - phase.report.started
        return partial

    async def end_phase(self, task_id: str) -> None:
        """The coordinator's quorum is met across gateways: end the phase now with what has come in."""
        with self._open.cond:
            phase = self._open.phases.get(task_id)
            if phase is not None:
                phase.end_now()
                self._open.cond.notify_all()

    async def end_phases(self) -> int:
        """End every phase under way, as a coordinator (re)attaches: a previous one's partials have no reader."""
        with self._open.cond:
            for phase in self._open.phases.values():
                phase.end_now()
            self._open.cond.notify_all()
            return len(self._open.phases)

    async def reject(self, node_id: int, error: Error) -> bool:
        return self.clients.reject(node_id, error)

    async def close_all(self, going_away: bool) -> None:
        self.clients.close_all(going_away=going_away)

    async def pid(self) -> int:
        return os.getpid()

    # RunHost: what its connections need --------------------------------------------
    def register_client(self, hello: Hello) -> Registration:
        """Blocking, on a worker thread: wait for the coordinator to register this hello."""
        ticket = secrets.token_hex(16)
        future: concurrent.futures.Future[Registration] = concurrent.futures.Future()
        request = JoinRequest(ticket, hello)
        with self._lock:
            self._waiting[ticket] = (request, future)
        self._loop.call_soon_threadsafe(self._news.set)
        try:
            return future.result(timeout=JOIN_TIMEOUT_SECONDS)
        except TimeoutError as exc:
            raise RegistrationUnavailable(
                f"the coordinator did not register it within {JOIN_TIMEOUT_SECONDS:.0f} s"
            ) from exc
        except RuntimeError as exc:  # the coordinator's answer: why it could not
            raise RegistrationUnavailable(str(exc)) from exc
        finally:
            with self._lock:
                self._waiting.pop(ticket, None)

    @property
    def run_id(self) -> str:
        return self.view.run_id

    @property
    def run_over(self) -> bool:
        return self.view.over

    @property
    def encodings(self) -> tuple[Encoding, Encoding]:
        return self.view.update_encoding, self.view.weights_encoding

    def resume_tasks(self, node_id: int, task_ids: list[str]) -> list[str]:
        """Of its tasks here: a node's tasks are resumed only at the gateway that sent them."""
        return self._open.resume(node_id, task_ids)

    def deliver(self, node_id: int, reply: Result | Error) -> bool:
        taken = self._open.deliver(node_id, reply)
        if taken and self._progress() != self._progress_sent:
            self._news.set()  # progress towards the coordinator's quorum (`events`); an evaluate reply is none
        return taken

    # Internals -------------------------------------------------------------------------
    def _pending(self) -> list[JoinRequest]:
        """Hellos not yet handed to the coordinator (caller holds `_lock`)."""
        return [r for t, (r, _) in self._waiting.items() if t not in self._handed]

    def _progress(self) -> dict[str, int]:
        """Updates accepted so far in each open phase that ends at a quorum."""
        with self._open.cond:
            return {t: p.report.ok for t, p in self._open.phases.items() if p.quorum is not None and not p.closed}

    def _refuse(self, node_id: int, error: Error) -> None:
        self.clients.reject(node_id, error)

    def _app(self) -> Starlette:
        async def ws(websocket: WebSocket) -> None:
            await serve_connection(websocket, self.limits, self.gate, self.clients, self.metrics, self)

        async def healthz(_: Request) -> PlainTextResponse:
            return PlainTextResponse("ok")

        return Starlette(routes=[Route("/healthz", healthz), WebSocketRoute("/ws", ws)])


def _node_ip() -> str:
    import ray

    return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
