"""A hostile participant: what an attacker who has the join token can throw at a coordinator.

Each attack opens its own connection, does one hostile thing, and returns what the
coordinator answered: the codes of the error frames it sent and how the connection
ended. `ATTACKS` lists them; the swarm test runs them many times over, alongside
honest clients, and counts the answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from coordinator.protocol import Chunk, Hello, Result, Task, Welcome, decode, decode_tensors, encode, encode_tensors
from coordinator.protocol.errors import ProtocolError
from coordinator.protocol.frame import MAGIC, PREFIX
from tests.wire import read_message

TIMEOUT = 6.0  # how long an attack waits for an answer before it calls it "silent"


@dataclass
class Outcome:
    inputs: int = 0  # hostile frames or socket behaviours delivered
    errors: list[str] = field(default_factory=list)  # codes of error frames received
    close: str = "open"  # how the connection ended: "close 1008", "silent", "refused", ...


@dataclass(frozen=True)
class Target:
    url: str  # ws://host:port/ws
    token: str
    rng: random.Random
    # Who the attacker claims to be, through the coordinator's trusted local proxy (X-Forwarded-For):
    # a swarm has many addresses, and per-address limits would otherwise stop it at the door.
    address: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.address is None else {"X-Forwarded-For": self.address}


Attack = Callable[[Target], Awaitable[Outcome]]


def raw_frame(header_json: bytes, payload: bytes = b"") -> bytes:
    """A frame with any header bytes at all (the codec's encoder only writes canonical JSON)."""
    return PREFIX.pack(MAGIC, len(header_json)) + header_json + payload


def hello(target: Target, **changes: object) -> bytes:
    fields: dict[str, object] = {
        "versions": [1],
        "token": target.token,
        "client_id": None,
        "backend": "python",
        "max_frame_bytes": 1 << 24,
    }
    fields.update(changes)
    return encode(Hello(**fields))  # type: ignore[arg-type]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Flip bits, truncate, or splice random bytes into a valid frame."""
    b = bytearray(data)
    kind = rng.choice(["flip", "truncate", "splice"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        b = b[: rng.randrange(len(b))]
    else:
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.randbytes(rng.randint(1, 64))
    return bytes(b)


async def _recv(ws: ClientConnection, timeout: float) -> bytes:
    data = await asyncio.wait_for(ws.recv(decode=False), timeout)
    assert isinstance(data, bytes)
    return data


async def _drain(ws: ClientConnection, out: Outcome, until: float = TIMEOUT) -> None:
    """Read until the coordinator closes the connection or goes quiet, noting error codes."""
    try:
        while True:
            data = await _recv(ws, until)
            with contextlib.suppress(ProtocolError):
                code = getattr(decode(data), "code", None)
                if code is not None:
                    out.errors.append(str(code))
            until = 1.0  # after the first answer, only wait briefly for more
    except ConnectionClosed as exc:
        out.close = f"close {exc.rcvd.code}" if exc.rcvd is not None else "dropped"
    except TimeoutError:
        out.close = "silent"


async def _session(target: Target, send: Callable[[ClientConnection, Outcome], Awaitable[None]]) -> Outcome:
    out = Outcome()
    try:
        async with connect(
            target.url, max_size=None, open_timeout=TIMEOUT, ping_interval=None, additional_headers=target.headers
        ) as ws:
            await send(ws, out)
            await _drain(ws, out)
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        out.close = f"refused ({type(exc).__name__})"
    except ConnectionClosed as exc:
        out.close = f"close {exc.rcvd.code}" if exc.rcvd is not None else "dropped"
    return out


async def _joined(ws: ClientConnection, target: Target, out: Outcome) -> Welcome | None:
    await ws.send(hello(target))
    while True:
        message = decode(await _recv(ws, TIMEOUT))
        if isinstance(message, Welcome):
            return message
        code = getattr(message, "code", None)
        if code is not None:
            out.errors.append(str(code))
            return None


async def _next_task(ws: ClientConnection) -> Task | None:
    try:
        while True:
            message = await read_message(ws)
            if isinstance(message, Task):
                return message
    except TimeoutError:
        return None


# Before the handshake ------------------------------------------------------------


async def garbage(target: Target) -> Outcome:
    async def send(ws: ClientConnection, out: Outcome) -> None:
        await ws.send(target.rng.randbytes(target.rng.randint(0, 4096)))
        out.inputs += 1

    return await _session(target, send)


async def mutated_hello(target: Target) -> Outcome:
    async def send(ws: ClientConnection, out: Outcome) -> None:
        await ws.send(mutate(hello(target), target.rng))
        out.inputs += 1

    return await _session(target, send)


HEADER_LIES = [
    b'{"type":"hello","versions":[' + b"9" * 400 + b'],"token":null,"client_id":null,"capabilities":{}}',
    b'{"type":"hello","versions":[1],"token":"' + b"x" * 100_000 + b'","client_id":null,"capabilities":{}}',
    b"[" * 5000 + b"]" * 5000,
    b'{"type":"hello","versions":[NaN],"token":null}',
    b'{"type":"hello","versions":[1e999],"token":null}',
    b'{"type":' + b'"x"' * 3 + b"}",
    b'{"type":"result","reply_to":"x","num_examples":1,"metrics":{}}',
    b'{"type":"welcome"}',
    b'{"type":"chunk","message_id":"m","index":0,"count":1,"total_bytes":1}',
    b'{"type":"hello","versions":' + b"[1," * 2000 + b"1" + b"]" * 2000 + b"}",
]


async def header_lie(target: Target) -> Outcome:
    async def send(ws: ClientConnection, out: Outcome) -> None:
        await ws.send(raw_frame(target.rng.choice(HEADER_LIES)))
        out.inputs += 1

    return await _session(target, send)


async def chunk_flood(target: Target) -> Outcome:
    """Many chunks of a huge message that never completes, before saying hello."""

    async def send(ws: ClientConnection, out: Outcome) -> None:
        piece = os.urandom(64 * 1024)
        for i in range(16):
            await ws.send(encode(Chunk(f"m{i}", 0, 1000, 1000 * len(piece), piece)))
            out.inputs += 1

    return await _session(target, send)


async def idle(target: Target) -> Outcome:
    """Connect and say nothing: the coordinator should not wait for ever."""
    out = Outcome(inputs=1)
    try:
        async with connect(
            target.url, open_timeout=TIMEOUT, ping_interval=None, additional_headers=target.headers
        ) as ws:
            await _drain(ws, out, until=20)
    except (OSError, InvalidHandshake, TimeoutError):
        out.close = "refused"
    except ConnectionClosed as exc:
        out.close = f"close {exc.rcvd.code}" if exc.rcvd is not None else "dropped"
    return out


async def slow_upgrade(target: Target) -> Outcome:
    """An HTTP upgrade whose headers trickle in, a byte a second."""
    host, port = target.url.removeprefix("ws://").split("/")[0].split(":")
    out = Outcome(inputs=1)
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    try:
        for byte in request.encode():
            writer.write(bytes([byte]))
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(-1), 1.0)  # returns only once the coordinator hangs up
                out.close = "dropped"
                return out
        out.close = "kept open"
    except OSError:
        out.close = "dropped"
    finally:
        writer.close()
    return out


async def never_reads(target: Target) -> Outcome:
    """A raw WebSocket that says hello and then never reads a byte (its receive window fills up)."""
    host, port = target.url.removeprefix("ws://").split("/")[0].split(":")
    out = Outcome(inputs=1)
    reader, writer = await asyncio.open_connection(host, int(port), limit=1024)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in target.headers.items())
        + "\r\n"
    )
    writer.write(request.encode())
    payload = hello(target)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    writer.write(struct.pack("!BBH", 0x82, 0x80 | 126, len(payload)) + mask + masked)
    await writer.drain()
    await asyncio.sleep(20)  # the coordinator broadcasts tasks meanwhile; we read none of them
    try:
        await asyncio.wait_for(reader.read(-1), 5)  # now read what piled up: it ends if the coordinator hung up
        out.close = "dropped"
    except (TimeoutError, OSError):
        out.close = "kept open"
    writer.close()
    return out


async def trickle(target: Target) -> Outcome:
    """Join, then send one message a few bytes at a time (80 bytes a second, never finishing)."""
    out = Outcome()
    try:
        async with connect(
            target.url, max_size=None, open_timeout=TIMEOUT, ping_interval=None, additional_headers=target.headers
        ) as ws:
            if await _joined(ws, target, out) is None:
                return out

            async def pieces() -> AsyncIterator[bytes]:
                for _ in range(200):  # 40 s: many times the swarm's silence period
                    await asyncio.sleep(0.2)
                    out.inputs += 1
                    yield os.urandom(16)

            await ws.send(pieces())
            out.close = "kept open"  # the whole trickle went through: nothing stopped it
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        out.close = f"refused ({type(exc).__name__})"
    except ConnectionClosed as exc:
        out.close = f"close {exc.rcvd.code}" if exc.rcvd is not None else "dropped"
    return out


# After the handshake -------------------------------------------------------------


def _delta_lie(task: Task, rng: random.Random) -> bytes:
    """A safetensors payload that lies: dtypes, offsets, shapes, names, or values."""
    names = list(json.loads(bytes(task.weights[8 : 8 + struct.unpack("<Q", task.weights[:8])[0]])))
    names = [n for n in names if n != "__metadata__"]
    kind = rng.choice(["dtype", "offsets", "shape", "names", "nan", "huge_header"])
    if kind in ("dtype", "offsets", "shape"):
        header: dict[str, object] = {}
        offset = 0
        for n in names:
            header[n] = {"dtype": "F32", "shape": [2, 2], "data_offsets": [offset, offset + 16]}
            offset += 16
        first = header[names[0]]
        assert isinstance(first, dict)
        if kind == "dtype":
            first["dtype"] = rng.choice(["BF16", "F8_E4M3", "F8_E5M2", "I64", "BOOL", "Q4"])
        elif kind == "offsets":
            first["data_offsets"] = [0, 1 << 40]
        body = json.dumps(header).encode()
        return struct.pack("<Q", len(body)) + body + bytes(offset)
    if kind == "names":
        return encode_tensors({"not.a.parameter": np.zeros(3, np.float32)})
    if kind == "nan":
        return encode_tensors({n: np.full(2, np.nan, np.float32) for n in names})
    return struct.pack("<Q", 1 << 60) + b"{}"


async def lying_result(target: Target) -> Outcome:
    """Join, wait for a task, answer it with a lie: in the delta, the example count or the metrics."""

    async def send(ws: ClientConnection, out: Outcome) -> None:
        if await _joined(ws, target, out) is None or (task := await _next_task(ws)) is None:
            return
        rng = target.rng
        lie = rng.choice(["delta", "examples", "big_int_metric", "huge_metric", "foreign", "replay", "wrong_state"])
        if lie == "delta":
            await ws.send(encode(Result(task.task_id, 100, {"train_loss": 0.1}, _delta_lie(task, rng))))
        elif lie == "examples":
            # A valid but empty update that claims to speak for a billion examples: FedAvg would stall.
            zero = encode_tensors({n: np.zeros_like(w) for n, w in decode_tensors(task.weights).items()})
            await ws.send(encode(Result(task.task_id, 10**9, {"train_loss": 0.1}, zero)))
        elif lie == "big_int_metric":
            header = '{"metrics":{"train_loss":' + "9" * 400 + '},"num_examples":5,"reply_to":"' + task.task_id
            await ws.send(raw_frame((header + '","type":"result"}').encode()))
        elif lie == "huge_metric":
            await ws.send(encode(Result(task.task_id, 5, {"train_loss": 1.7e308}, b"")))
        elif lie == "foreign":
            await ws.send(encode(Result(os.urandom(16).hex(), 5, {"train_loss": 0.1}, b"")))
        elif lie == "replay":
            await ws.send(encode(Result(task.task_id, 5, {"loss": 0.1, "accuracy": 1.0}, b"")))
            await ws.send(encode(Result(task.task_id, 5, {"loss": 0.1, "accuracy": 1.0}, b"")))
            out.inputs += 1
        else:
            await ws.send(encode(Task(task.kind, task.task_id, task.run_id, task.round, task.model, {}, task.weights)))
        out.inputs += 1

    return await _session(target, send)


async def identity_theft(target: Target, victims: list[str]) -> Outcome:
    """Say hello with an honest client's id and no or a guessed secret: it must get a node of its own."""

    async def send(ws: ClientConnection, out: Outcome) -> None:
        guess = target.rng.choice([None, base64.urlsafe_b64encode(target.rng.randbytes(32)).decode().rstrip("=")])
        await ws.send(hello(target, client_id=target.rng.choice(victims), secret=guess))
        out.inputs += 1

    return await _session(target, send)


ATTACKS: list[Attack] = [garbage, mutated_hello, header_lie, chunk_flood, lying_result]
SLOW_ATTACKS: list[Attack] = [idle, slow_upgrade, never_reads, trickle]
