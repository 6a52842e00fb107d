"""The client's connection loop: join, answer tasks, heartbeat, reconnect with backoff."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection as Socket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from coordinator.client.directory import endpoint
from coordinator.client.worker import TaskWorker
from coordinator.protocol.encodings import ENCODINGS
from coordinator.protocol.endpoints import (
    ClientProtocol,
    PeerError,
    TaskReceived,
    Welcomed,
)
from coordinator.protocol.errors import ErrorCode
from coordinator.protocol.messages import Task, Welcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentOptions:
    url: str
    token: str | None = None
    backend: str = "python"
    heartbeat_seconds: float = 5.0
    max_backoff: float = 5.0
    give_up_after: float | None = None  # seconds without a connection; None retries forever
    drop_in_round: int | None = None  # test hook: vanish on receiving this round's train task


@dataclass
class Identity:
    """Who this client is to the coordinator: the id is a name, the secret proves it (SPEC §4)."""

    client_id: str | None = None
    secret: str | None = None

    def update(self, welcome: Welcome) -> None:
        """Keep what a welcome says: with a secret, it is a new node (ours was not resumed)."""
        self.client_id = welcome.client_id
        if welcome.secret is not None:
            self.secret = welcome.secret


class Exit(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


async def run_agent(options: AgentOptions, worker: TaskWorker) -> int:
    """Returns the process exit code: 0 when the run completed, non-zero on a fatal refusal.

    Only close code 1000 means the run is over; any other close (replaced by a newer
    connection, dropped for silence, a server error, a coordinator restart) means reconnect.
    """
    identity = Identity()
    backoff = 0.25
    loop = asyncio.get_running_loop()
    last_connected = loop.time()
    while True:
        try:
            url = await asyncio.to_thread(endpoint, options.url)
            async with connect(url, max_size=None, compression=None, ping_interval=None) as ws:
                last_connected = loop.time()
                backoff = 0.25
                await _serve(ws, options, worker, identity)
            if ws.close_code == 1000:
                log.info("coordinator closed the connection: %s", ws.close_reason or "done")
                return 0
            log.warning("connection closed (%s); reconnecting", ws.close_code)
        except Exit as exc:
            log.info("%s", exc)
            return exc.code
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == 1000:
                log.info("coordinator closed the connection: %s", exc.rcvd.reason or "done")
                return 0
            log.warning("connection lost (%s); reconnecting", exc)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            log.info("cannot reach %s (%s); retrying in %.1f s", options.url, exc, backoff)
        except InvalidURI as exc:
            log.error("%s", exc)
            return 2
        if options.give_up_after is not None and loop.time() - last_connected > options.give_up_after:
            log.error("no connection for %.0f s; giving up", options.give_up_after)
            return 3
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, options.max_backoff)


async def _serve(ws: Socket, options: AgentOptions, worker: TaskWorker, identity: Identity) -> None:
    """One connection: join, answer tasks until the coordinator closes it; `identity` learns what welcome says."""
    conn = ClientProtocol()
    conn.hello(
        token=options.token,
        client_id=identity.client_id,
        backend=options.backend,
        agent="pollen-python",
        secret=identity.secret,
        encodings={"update": list(ENCODINGS), "weights": list(ENCODINGS)},
    )

    async def flush() -> None:
        for frame in conn.data_to_send():
            await ws.send(frame)

    async def heartbeats() -> None:
        while True:
            await asyncio.sleep(options.heartbeat_seconds)
            conn.heartbeat()
            await flush()

    cancelled: set[str] = set()  # tasks the coordinator no longer needs (SPEC §6, task_cancelled)
    answering: asyncio.Task[None] | None = None

    async def answer(task: Task, before: asyncio.Task[None] | None) -> None:
        # Tasks run one after another while frames keep being read, so that a cancellation is heard.
        if before is not None:
            await before
        if task.task_id in cancelled:
            return
        reply = await asyncio.to_thread(worker.answer, task)
        if task.task_id in cancelled:
            log.info("round %d: the coordinator no longer needs this update; not sending it", task.round)
            return
        conn.send(reply)
        await flush()
        if worker.unusable is not None:
            await ws.close(1000, "the client's data cannot be used")
            raise Exit(2, f"cannot train on this data: {worker.unusable}")

    await flush()
    beat = asyncio.create_task(heartbeats())
    try:
        async for data in ws:
            if isinstance(data, str):
                continue
            for event in conn.receive(data):
                if isinstance(event, Welcomed):
                    identity.update(event.welcome)
                    chosen = event.welcome.encodings or {}
                    worker.update_encoding = chosen.get("update", "fp32")  # type: ignore[assignment]
                    log.info("joined as node %d", event.welcome.node_id)
                elif isinstance(event, TaskReceived):
                    task = event.task
                    if task.kind == "train" and task.round == options.drop_in_round:
                        ws.transport.abort()
                        raise Exit(0, f"dropping out in round {task.round} (test hook)")
                    answering = asyncio.create_task(answer(task, answering))
                elif isinstance(event, PeerError):
                    error = event.error
                    if error.fatal:  # the coordinator says retrying cannot help (bad token, no common version)
                        raise Exit(2, f"coordinator refused us: {error.code}: {error.message}")
                    if error.code == ErrorCode.TASK_CANCELLED and error.reply_to is not None:
                        cancelled.add(error.reply_to)
                        log.info("coordinator cancelled a task: %s", error.message)
                    else:
                        log.warning("coordinator reports %s: %s", error.code, error.message)
            await flush()
            failure = answering.exception() if answering is not None and answering.done() else None
            if failure is not None:
                raise failure
        if answering is not None and answering.done() and (failure := answering.exception()) is not None:
            raise failure  # it closed the connection itself, as it gave up
    finally:
        beat.cancel()
        if answering is not None:
            answering.cancel()
