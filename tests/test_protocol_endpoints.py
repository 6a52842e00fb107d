"""The sans-I/O state machines: handshake, version negotiation, auth, task bookkeeping, chunking."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.protocol import Error, Heartbeat, Result, Task, Welcome, close_codes, decode, encode, encode_tensors
from coordinator.protocol.chunking import Reassembler, split_frame
from coordinator.protocol.endpoints import (
    ClientProtocol,
    HelloReceived,
    ReplyReceived,
    ServerProtocol,
    State,
    TaskReceived,
    Welcomed,
)
from coordinator.protocol.errors import ErrorCode, ProtocolError
from coordinator.protocol.messages import Chunk, Hello

TINY = {
    "name": "t",
    "input_shape": [4],
    "num_classes": 2,
    "layers": [{"type": "linear", "in_features": 4, "out_features": 2}],
}


def hello(versions: list[int] | None = None, token: str | None = "t", max_frame: int = 1 << 20) -> bytes:
    return encode(Hello(versions or [1], token, None, "python", max_frame))


def errors(conn: ServerProtocol | ClientProtocol) -> list[Error]:
    return [m for m in map(decode, conn.data_to_send()) if isinstance(m, Error)]


def open_server(token: str | None = "t") -> ServerProtocol:
    server = ServerProtocol(join_token=token)
    (event,) = server.receive(hello())
    assert isinstance(event, HelloReceived) and event.version == 1
    server.accept(Welcome(1, "c", 1, "r", 1 << 20, 10))
    server.data_to_send()
    return server


def test_handshake_and_reply_flow() -> None:
    server = open_server()
    server.send_task("task-1", encode(Task("train", "task-1", "r", 1, TINY, {}, b"w")))
    assert len(server.data_to_send()) == 1
    (event,) = server.receive(encode(Result("task-1", 5, {"train_loss": 0.5}, b"")))
    assert isinstance(event, ReplyReceived) and isinstance(event.reply, Result) and event.reply.num_examples == 5
    assert server.in_flight == set()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (hello(versions=[7, 9]), "unsupported_version"),
        (hello(token="wrong"), "unauthorized"),
        (hello(token=None), "unauthorized"),
        (encode(Heartbeat(1)), "not_ready"),
        (b"garbage!", "bad_frame"),
    ],
)
def test_handshake_failures_are_fatal_with_a_clear_error(frame: bytes, code: str) -> None:
    server = ServerProtocol(join_token="t")
    assert server.receive(frame) == []
    (error,) = errors(server)
    assert error.code == code and error.fatal
    assert server.state is State.CLOSED and server.close_code in (1002, 1008)


def test_version_mismatch_names_both_sides() -> None:
    server = ServerProtocol(join_token=None)
    server.receive(hello(versions=[2]))
    (error,) = errors(server)
    assert "[2]" in error.message and "[1]" in error.message


def test_reply_to_unknown_task_is_refused_without_closing() -> None:
    server = open_server()
    assert server.receive(encode(Result("never-sent", 1, {}, b""))) == []
    (error,) = errors(server)
    assert error.code == "unknown_task" and not error.fatal and server.state is State.OPEN


def test_second_reply_to_the_same_task_is_refused() -> None:
    server = open_server()
    server.send_task("t1", encode(Task("train", "t1", "r", 1, TINY, {}, b"w")))
    server.data_to_send()
    assert len(server.receive(encode(Result("t1", 1, {}, b"")))) == 1
    assert server.receive(encode(Result("t1", 1, {}, b""))) == []
    assert errors(server)[-1].code == "unknown_task"


def test_after_handshake_a_bad_frame_is_not_fatal() -> None:
    server = open_server()
    server.receive(b"PLN1\x05\x00\x00\x00{")
    (error,) = errors(server)
    assert error.code == "truncated" and not error.fatal and server.state is State.OPEN


def test_oversized_frame_is_refused() -> None:
    server = ServerProtocol(join_token=None, max_frame_bytes=2048)
    server.receive(hello(token=None))
    server.accept(Welcome(1, "c", 1, "r", 2048, 10))
    server.data_to_send()
    server.receive(encode(Result("x", 1, {}, b"\0" * 5000)))
    assert errors(server)[0].code == "frame_too_large"


def test_large_task_is_chunked_to_the_peer_limit_and_reassembled() -> None:
    weights = encode_tensors({"w": np.random.default_rng(0).normal(size=(300, 100)).astype(np.float32)})
    server = ServerProtocol(join_token=None)
    server.receive(hello(token=None, max_frame=8192))
    server.accept(Welcome(1, "c", 1, "r", 1 << 20, 10))
    server.data_to_send()
    task_frame = encode(Task("train", "big", "r", 1, TINY, {}, weights))
    server.send_task("big", task_frame)
    frames = server.data_to_send()
    assert len(frames) > 10 and all(len(f) <= 8192 for f in frames)
    client = ClientProtocol(max_frame_bytes=8192)
    client.receive(encode(Welcome(1, "c", 1, "r", 1 << 20, 10)))
    events = [e for f in frames for e in client.receive(f)]
    (event,) = events
    assert isinstance(event, TaskReceived) and event.task.weights == weights


def test_chunks_out_of_order_are_refused() -> None:
    chunks = [decode(f) for f in split_frame(b"x" * 5000, 1024, "m")]
    assert all(isinstance(c, Chunk) for c in chunks)
    r = Reassembler(1 << 20)
    r.feed(chunks[0])  # type: ignore[arg-type]
    with pytest.raises(ProtocolError) as info:
        r.feed(chunks[2])  # type: ignore[arg-type]
    assert info.value.code == "invalid_message"


def test_reassembled_message_over_the_limit_is_refused() -> None:
    (first, *_) = [decode(f) for f in split_frame(b"x" * 5000, 1024, "m")]
    with pytest.raises(ProtocolError) as info:
        Reassembler(4096).feed(first)  # type: ignore[arg-type]
    assert info.value.code == "frame_too_large"


def test_client_learns_the_coordinator_limit_from_welcome() -> None:
    client = ClientProtocol()
    client.hello(token=None, client_id=None, backend="python")
    assert isinstance(decode(client.data_to_send()[0]), Hello)
    (event,) = client.receive(encode(Welcome(1, "c9", 9, "r", 4096, 10)))
    assert isinstance(event, Welcomed) and client.peer_max_frame_bytes == 4096
    client.send(Result("t", 1, {}, b"\0" * 10000))
    assert all(len(f) <= 4096 for f in client.data_to_send())


def chunk_frames(size: int, message_id: str, max_frame: int = 4096) -> list[bytes]:
    return split_frame(encode(Result("t", 1, {}, b"\1" * size)), max_frame, message_id)


def test_a_chunk_before_hello_is_fatal_and_nothing_is_reassembled() -> None:
    server = ServerProtocol(join_token="t")
    first, *_ = chunk_frames(50_000, "m")
    assert server.receive(first) == []
    (error,) = errors(server)
    assert error.code == "not_ready" and error.fatal
    assert server.state is State.CLOSED and server.close_code == 1002 and server.held_bytes == 0


def test_a_chunk_between_hello_and_welcome_is_fatal() -> None:
    server = ServerProtocol(join_token="t")
    server.receive(hello())
    server.receive(chunk_frames(50_000, "m")[0])
    assert errors(server)[-1].code == "not_ready" and server.state is State.CLOSED and server.held_bytes == 0


def test_a_second_hello_before_welcome_is_fatal() -> None:
    server = ServerProtocol(join_token="t")
    assert len(server.receive(hello())) == 1
    assert server.receive(hello()) == []
    assert errors(server)[-1].code == "not_ready" and server.state is State.CLOSED


def test_before_welcome_a_frame_larger_than_any_hello_is_refused_with_1009() -> None:
    server = ServerProtocol(join_token="t")
    server.receive(encode(Heartbeat(1)) + b"\0" * 70_000)
    (error,) = errors(server)
    assert error.code == "frame_too_large" and server.close_code == 1009


def test_unfinished_chunked_messages_are_bounded_in_bytes() -> None:
    server = open_server()
    server._reassembler.max_partial_bytes = 20_000
    floods = [chunk_frames(50_000, f"m{i}")[:2] for i in range(10)]
    for first, second in floods:
        server.receive(first)
        server.receive(second)
        assert server.held_bytes <= 20_000
        if server.state is State.CLOSED:
            break
    assert server.state is State.CLOSED and server.close_code == 1009 and server.held_bytes == 0
    assert errors(server)[-1].code == "frame_too_large"


def test_unfinished_chunked_messages_are_bounded_in_number() -> None:
    server = ServerProtocol(join_token="t", max_partial_messages=3)
    server.receive(hello())
    server.accept(Welcome(1, "c", 1, "r", 1 << 20, 10))
    server.data_to_send()
    for i in range(3):
        server.receive(chunk_frames(50_000, f"m{i}")[0])
    assert errors(server) == [] and server._reassembler.partial_messages == 3
    server.receive(chunk_frames(50_000, "m3")[0])
    (error,) = errors(server)
    assert error.code == "invalid_message" and error.fatal and server.state is State.CLOSED


def test_a_finished_chunked_message_releases_its_bytes() -> None:
    server = open_server()
    server.send_task("t", encode(Task("train", "t", "r", 1, TINY, {}, b"w")))
    server.data_to_send()
    events = [e for f in chunk_frames(50_000, "m") for e in server.receive(f)]
    assert len(events) == 1 and server.held_bytes == 0


def test_empty_chunks_are_refused() -> None:
    server = open_server()
    server.receive(encode(Chunk("m", 0, 3, 10, b"")))
    assert errors(server)[0].code == "invalid_message" and server.held_bytes == 0


def test_error_messages_built_from_exceptions_are_cut() -> None:
    server = open_server()
    server.fail(ProtocolError(ErrorCode.INTERNAL, "q" * 50_000), fatal=False)
    (error,) = errors(server)
    assert len(error.message) == 1024


def test_nothing_is_queued_or_put_in_flight_after_close() -> None:
    server = ServerProtocol(join_token="t")
    server.receive(b"garbage!")
    assert len(server.data_to_send()) == 1
    server.send_task("t9", encode(Task("train", "t9", "r", 1, TINY, {}, b"w")))
    server.heartbeat()
    assert server.data_to_send() == [] and server.in_flight == set()


@pytest.mark.parametrize(
    ("code", "close"),
    [
        (ErrorCode.UNAUTHORIZED, close_codes.POLICY_VIOLATION),
        (ErrorCode.FRAME_TOO_LARGE, close_codes.TOO_BIG),
        (ErrorCode.INTERNAL, close_codes.SERVER_ERROR),
        (ErrorCode.UNSUPPORTED_VERSION, close_codes.PROTOCOL_ERROR),
        (ErrorCode.BAD_FRAME, close_codes.PROTOCOL_ERROR),
        (ErrorCode.NOT_READY, close_codes.PROTOCOL_ERROR),
    ],
)
def test_a_fatal_error_closes_with_its_rfc_6455_code(code: ErrorCode, close: int) -> None:
    server = ServerProtocol(join_token="t")
    server.fail(ProtocolError(code, "x"), fatal=True)
    assert server.close_code == close != close_codes.RUN_COMPLETE


def test_only_run_complete_unauthorized_and_unsupported_version_are_final() -> None:
    assert close_codes.is_final(1000)
    assert close_codes.is_final(1008, "unauthorized") and close_codes.is_final(1002, "unsupported_version")
    for code in (1001, 1002, 1008, 1009, 1011, 1013, 4001, 4002, 4003, 4004, 4005):
        assert not close_codes.is_final(code, "invalid_message")
