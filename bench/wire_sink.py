"""The wire alone: the coordinator's WebSocket stack moving a round's frames, with no federation behind it.

A Starlette app on the same uvicorn protocol classes the coordinator uses. It welcomes
fake clients, and `GET /round?model=NAME` sends every one of them the same task frame a
coordinator would (the same chunked `SharedFrame`), reads every reply whole, and answers
with the seconds from the first send to the last reply. That is the wire time of a round:
what the coordinator's own round time is compared with.

    python -m bench.wire_sink PORT
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from coordinator.models.spec import load_spec
from coordinator.models.torch_model import build_module, wire_weights
from coordinator.protocol import Task, Welcome, encode, encode_tensors
from coordinator.protocol.chunking import SharedFrame
from coordinator.protocol.frame import decode_frame, encode_frame
from coordinator.server.transport import HELD_BACK_EXTENSION, FlowControlledWebSocket


class Sink:
    def __init__(self) -> None:
        self.sockets: list[WebSocket] = []
        self.replies = 0
        self.bytes_in = 0
        self.all_in = asyncio.Event()
        self.expected = 0

    async def serve(self, ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_bytes()  # the hello
        node = len(self.sockets) + 1
        await ws.send_bytes(encode(Welcome(1, uuid.uuid4().hex, node, "wire", 16 << 20, 10.0)))
        self.sockets.append(ws)
        try:
            while True:
                data = await ws.receive_bytes()
                if decode_frame(data).type != "result":
                    continue  # heartbeats
                self.replies += 1
                self.bytes_in += len(data)
                if self.replies >= self.expected:
                    self.all_in.set()
        except WebSocketDisconnect:
            self.sockets.remove(ws)

    async def round(self, request: Request) -> JSONResponse:
        spec = load_spec(request.query_params["model"])
        weights = encode_tensors(wire_weights(build_module(spec)))
        task = Task("train", uuid.uuid4().hex, "wire", 1, spec.raw, {}, weights)
        frame = SharedFrame(encode_frame(task.header()), weights)
        self.replies, self.bytes_in, self.expected = 0, 0, len(self.sockets)
        self.all_in.clear()
        started = time.perf_counter()

        async def send(ws: WebSocket) -> None:
            connection = ws.scope["extensions"][HELD_BACK_EXTENSION]["connection"]
            for piece in frame.frames(16 << 20):  # as the coordinator sends a broadcast: no copy per socket
                await connection.send_shared(piece)

        await asyncio.gather(*(send(ws) for ws in list(self.sockets)))
        await self.all_in.wait()
        seconds = time.perf_counter() - started
        return JSONResponse({"seconds": seconds, "clients": self.expected, "bytes_in": self.bytes_in})


def app() -> Starlette:
    sink = Sink()
    return Starlette(routes=[WebSocketRoute("/ws", sink.serve), Route("/round", sink.round)])


if __name__ == "__main__":
    uvicorn.run(
        app(),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        ws=FlowControlledWebSocket,
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        ws_max_size=1 << 30,
    )
