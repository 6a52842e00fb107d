"""A load generator: many protocol-speaking fake clients per process, built on the project's own codec.

A fake client joins like a real one (`ClientProtocol.hello`, heartbeats every 5 s) and
answers every train task with a random delta of the model's shapes, every evaluate task
with loss and accuracy, at once: it trains nothing, so what a round costs is the
coordinator's work and the wire. Deltas are encoded once per process (a few variants), so
the generator's own CPU does not limit the coordinator.

A task's payload is not kept: a chunked task is read piece by piece and only its first
piece (which holds the header) is decoded, so 3,000 clients receiving a 6.6 MB model at
once do not need 20 GB in the generator. Everything the coordinator sends is still read.
An upload is one WebSocket frame, as a browser sends it; its masked copy waits in the
generator's socket buffer until the coordinator reads it, so each process keeps at most
`UPLOADS_IN_FLIGHT` uploads under way (the coordinator sees that many per process at once).

    gen = LoadGenerator(url, clients=1000, processes=2)
    gen.start(); gen.wait_joined(); ...; gen.stop()
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import resource
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from coordinator.client.directory import endpoint
from coordinator.models.spec import spec_from_dict
from coordinator.protocol import Chunk, Heartbeat, Result, Task, encode, encode_tensors
from coordinator.protocol.endpoints import ClientProtocol
from coordinator.protocol.frame import decode_frame
from coordinator.protocol.messages import parse

HEARTBEAT_SECONDS = 5.0
VARIANTS = 4  # distinct deltas per process
UPLOADS_IN_FLIGHT = 64  # per process: each holds a model-sized masked frame until it is read


@dataclass(frozen=True)
class Options:
    url: str
    clients: int
    backend: str = "bench"
    connect_batch: int = 100  # connections opened at once per process


class _Deltas:
    """Encoded random deltas per model, made on the first task of that model."""

    def __init__(self) -> None:
        self._by_model: dict[str, list[bytes]] = {}

    def get(self, model: dict[str, Any], i: int) -> bytes:
        key = str(model.get("name")) + str(len(str(model)))
        if key not in self._by_model:
            shapes = spec_from_dict(model).wire_shapes()
            rng = np.random.default_rng(len(self._by_model))
            self._by_model[key] = [
                encode_tensors({n: (rng.standard_normal(s) * 1e-3).astype(np.float32) for n, s in shapes.items()})
                for _ in range(VARIANTS)
            ]
        return self._by_model[key][i % VARIANTS]


async def _client(
    i: int, opts: Options, deltas: _Deltas, joined: list[int], stop: asyncio.Event, uploads: asyncio.Semaphore
) -> None:
    url = await asyncio.to_thread(endpoint, opts.url)  # a coordinator's http:// address names a gateway
    ws = await connect(url, max_size=None, max_queue=4, compression=None, ping_interval=None, open_timeout=120)
    conn = ClientProtocol()
    conn.hello(token=None, client_id=None, backend=opts.backend, agent="pollen-bench")
    await ws.send(conn.data_to_send()[0])
    beat = asyncio.create_task(_heartbeats(ws))
    first_piece: dict[str, bytes] = {}  # chunked message id → its first piece (the header is in it)
    try:
        while not stop.is_set():
            data = await ws.recv(decode=False)
            frame = decode_frame(data)
            if frame.type == "welcome":
                joined[0] += 1
                continue
            if frame.type == "chunk":
                chunk = parse(frame)
                assert isinstance(chunk, Chunk)
                if chunk.index == 0:
                    first_piece[chunk.message_id] = bytes(chunk.piece)
                if chunk.index < chunk.count - 1:
                    continue
                frame = decode_frame(first_piece.pop(chunk.message_id))
            if frame.type in ("train", "evaluate"):
                task = Task.from_frame(frame)
                async with uploads:
                    await ws.send(_answer(task, deltas, i))
    finally:
        beat.cancel()
        await ws.close()


def _answer(task: Task, deltas: _Deltas, i: int) -> bytes:
    if task.kind == "evaluate":
        return encode(Result(task.task_id, 100, {"loss": 0.5, "accuracy": 0.9}))
    return encode(Result(task.task_id, 100, {"train_loss": 0.5, "train_seconds": 0.0}, deltas.get(task.model, i)))


async def _heartbeats(ws: ClientConnection) -> None:
    seq = 0
    # Browsers join over minutes, not in the generator's burst: each keeps its own phase.
    await asyncio.sleep(random.uniform(0, HEARTBEAT_SECONDS))
    while True:
        seq += 1
        await ws.send(encode(Heartbeat(seq)))
        await asyncio.sleep(HEARTBEAT_SECONDS)


async def _run(opts: Options, offset: int, joined_out: Any, stop_flag: MpEvent) -> None:
    deltas, joined, stop, uploads = _Deltas(), [0], asyncio.Event(), asyncio.Semaphore(UPLOADS_IN_FLIGHT)
    tasks: list[asyncio.Task[None]] = []
    for start in range(0, opts.clients, opts.connect_batch):
        batch = range(start, min(start + opts.connect_batch, opts.clients))
        tasks += [asyncio.create_task(_client(offset + i, opts, deltas, joined, stop, uploads)) for i in batch]
        while joined[0] < batch.stop:
            await asyncio.sleep(0.05)
            if any(t.done() and t.exception() for t in tasks):
                raise next(t.exception() for t in tasks if t.done() and t.exception())  # type: ignore[misc]
        joined_out.value = joined[0]
    while not stop_flag.is_set():
        await asyncio.sleep(0.2)
        joined_out.value = joined[0]
    stop.set()
    for t in tasks:
        t.cancel()


def _process(opts: Options, offset: int, joined: Any, stop: MpEvent) -> None:
    _raise_file_limit()
    asyncio.run(_run(opts, offset, joined, stop))


def _raise_file_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class LoadGenerator:
    """`clients` fake clients spread over `processes` processes."""

    def __init__(self, url: str, clients: int, processes: int = 2) -> None:
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        per = [clients // processes + (1 if p < clients % processes else 0) for p in range(processes)]
        self._joined = [ctx.Value("i", 0) for _ in per]
        offsets = np.cumsum([0, *per])
        self._procs = [
            ctx.Process(target=_process, args=(Options(url, n), int(offsets[p]), self._joined[p], self._stop))
            for p, n in enumerate(per)
            if n
        ]
        self.clients = clients

    def start(self) -> None:
        for p in self._procs:
            p.start()

    @property
    def joined(self) -> int:
        return sum(int(v.value) for v in self._joined)

    def wait_joined(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.joined < self.clients:
            if time.monotonic() > deadline or not all(p.is_alive() for p in self._procs):
                raise RuntimeError(f"only {self.joined} of {self.clients} fake clients joined")
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        for p in self._procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
