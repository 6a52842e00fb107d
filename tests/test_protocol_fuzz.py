"""Property-based fuzzing of the codec and the sans-I/O endpoints (Hypothesis).

Arbitrary bytes and mutated valid frames (bit flips, truncations, header JSON
mutations, safetensors lies) must never make the codec raise anything but
ProtocolError, never make an endpoint raise at all, and leave the endpoint's
state consistent. Under CI=true the runs are derandomized, so a failure there
reproduces locally with the same variable set.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.protocol import (
    Error,
    Heartbeat,
    Hello,
    ProtocolError,
    Result,
    Task,
    Welcome,
    decode,
    decode_frame,
    decode_tensors,
    encode,
    encode_tensors,
)
from coordinator.protocol.chunking import split_frame
from coordinator.protocol.endpoints import ClientProtocol, HelloReceived, ServerProtocol, State
from coordinator.protocol.errors import ErrorCode
from coordinator.protocol.limits import MAX_ERROR_MESSAGE_CHARS
from coordinator.resources import protocol_dir

CI = os.environ.get("CI") == "true"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=CI,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TINY = {
    "name": "t",
    "input_shape": [4],
    "num_classes": 2,
    "layers": [{"type": "linear", "in_features": 4, "out_features": 2}],
}
DELTA_TENSORS = {
    "layers.0.weight": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4),
    "layers.0.bias": np.zeros(2, np.float32),
}
DELTA = encode_tensors(DELTA_TENSORS)
SHAPES = {name: t.shape for name, t in DELTA_TENSORS.items()}
# Every encoding of SPEC §2.1, so flips and cuts also land in fp16 halves, int8 levels and `:scales`.
DELTAS = [DELTA, encode_tensors(DELTA_TENSORS, "fp16"), encode_tensors(DELTA_TENSORS, "int8")]
TASK_IDS = ["t0", "t1", "t2"]
VECTORS = json.loads((protocol_dir() / "vectors" / "frames.json").read_text())
VALID_FRAMES = [bytes.fromhex(v["frame_hex"]) for v in VECTORS["valid"]] + [
    encode(Hello([1], "tok", None, "python", 4096)),
    encode(Hello([1], "tok", "a-client-id", "python", 4096, "agent", "s" * 43)),  # a resuming hello, secret included
    encode(Result("t0", 10, {"train_loss": 0.5}, DELTA)),
    encode(Result("t1", 3, {"loss": 0.1, "accuracy": 0.5})),
    encode(Error("training_failed", "out of memory", "t2")),
    encode(Heartbeat(3)),
]
DTYPES = ["F32", "BF16", "F8_E4M3", "F8_E5M2", "F16", "F64", "I64", "I32", "U8", "BOOL"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**4000), max_value=10**4000)
    | st.floats()
    | st.text(max_size=40)
    | st.just("x" * 5000),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=24,
)


def flip_bits(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        if out:
            out[p % len(out)] ^= 1 << (p % 8)
    return bytes(out)


# JSON text no serialiser writes: integers past CPython's 4300-digit limit, non-JSON constants, deep nesting.
raw_tokens = (
    st.integers(1, 6000).map(lambda n: "9" * n)
    | st.sampled_from(["NaN", "-Infinity", "1e999", "-1e400", "1.7e308"])
    | st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)
)
PLACEHOLDER = "\x00splice\x00"


@st.composite
def header_mutations(draw: st.DrawFn) -> bytes:
    """A valid frame whose header had a field replaced, added or removed, serialised as Python's json writes it
    or with raw JSON text spliced in."""
    frame = decode_frame(draw(st.sampled_from(VALID_FRAMES)))
    header = dict(frame.header)
    key = draw(st.sampled_from([*header, "x", "type", "metrics"]))
    mode = draw(st.sampled_from(["replace", "delete", "splice"]))
    if mode == "splice" and isinstance(header.get(key), dict):
        header[key] = {**header[key], draw(st.text(max_size=70)): PLACEHOLDER}
    elif mode == "splice":
        header[key] = PLACEHOLDER
    elif mode == "delete" and key in header:
        del header[key]
    else:
        header[key] = draw(json_values)
    text = json.dumps(header, allow_nan=True).replace(json.dumps(PLACEHOLDER), draw(raw_tokens))
    body = text.encode()
    return b"PLN1" + struct.pack("<I", len(body)) + body + frame.payload


@st.composite
def safetensors_lies(draw: st.DrawFn) -> bytes:
    """Safetensors files whose header lies about dtypes, shapes, offsets or its own length."""
    header: dict[str, Any] = {}
    for i in range(draw(st.integers(0, 3))):
        entry: dict[str, Any] = {
            "dtype": draw(st.sampled_from(DTYPES) | json_values),
            "shape": draw(st.lists(st.integers(-4, 2**62), max_size=4) | json_values),
            "data_offsets": draw(st.lists(st.integers(-8, 2**64), max_size=3) | json_values),
        }
        if draw(st.booleans()):
            entry.pop(draw(st.sampled_from(list(entry))))
        header[f"t{i}"] = entry
    if draw(st.booleans()):
        header["__metadata__"] = draw(json_values)
    body = json.dumps(header, allow_nan=True).encode()
    declared = draw(st.just(len(body)) | st.integers(0, 2**64 - 1))
    return struct.pack("<Q", declared) + body + draw(st.binary(max_size=64))


@st.composite
def consistent_dtype_lies(draw: st.DrawFn) -> bytes:
    """Well-formed files (offsets and sizes agree) in a dtype the wire does not carry, or F32."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.lists(st.integers(0, 4), max_size=3))
    size = int(np.prod(shape)) * 4
    header = {"w": {"dtype": dtype, "shape": shape, "data_offsets": [0, size]}}
    body = json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + draw(st.binary(min_size=size, max_size=size))


payloads = (
    st.binary(max_size=256)
    | safetensors_lies()
    | consistent_dtype_lies()
    | st.sampled_from(DELTAS)
    | st.builds(flip_bits, st.sampled_from(DELTAS), st.lists(st.integers(0, 8 * len(DELTA)), min_size=1, max_size=4))
    | st.builds(lambda d, n: d[:n], st.sampled_from(DELTAS), st.integers(0, len(DELTA)))
)

frames = (
    st.binary(max_size=512)
    | st.sampled_from(VALID_FRAMES)
    | header_mutations()
    | st.builds(flip_bits, st.sampled_from(VALID_FRAMES), st.lists(st.integers(0, 8 * 600), min_size=1, max_size=4))
    | st.builds(lambda f, n: f[:n], st.sampled_from(VALID_FRAMES), st.integers(0, 600))
    | st.builds(lambda p: encode(Result("t0", 5, {"train_loss": 0.1}, p)), payloads)
)


@st.composite
def chunk_floods(draw: st.DrawFn) -> list[bytes]:
    """Chunk frames, honest (a result split to a small limit) or forged (ids, indexes, counts, sizes)."""
    if draw(st.booleans()):
        result = encode(Result(draw(st.sampled_from(TASK_IDS)), 5, {"train_loss": 0.1}, DELTA))
        return split_frame(result, 1024, draw(st.sampled_from(["m1", "m2"])))
    forged = []
    for _ in range(draw(st.integers(1, 12))):
        header = {
            "type": "chunk",
            "message_id": draw(st.sampled_from(["a", "b", "c", "d", "e", "f"])),
            "index": draw(st.integers(0, 4)),
            "count": draw(st.integers(1, 6) | st.integers(1, 2**53 - 1)),
            "total_bytes": draw(st.integers(1, 20_000) | st.integers(1, 2**53 - 1)),
        }
        body = json.dumps(header).encode()
        forged.append(b"PLN1" + struct.pack("<I", len(body)) + body + b"\x01" * draw(st.integers(0, 3000)))
    return forged


actions = st.lists(
    frames.map(lambda f: [("recv", f)])
    | chunk_floods().map(lambda fs: [("recv", f) for f in fs])
    | st.sampled_from(TASK_IDS).map(lambda t: [("task", t)]),
    max_size=12,
).map(lambda groups: [a for g in groups for a in g])


def decodes_or_refuses(data: bytes) -> None:
    """Either a ProtocolError with a spec code, or a message that survives re-encoding unchanged.

    Only a tensors payload's header padding may change (the encoder lays it out for its frame, SPEC §2),
    and re-encoding the re-encoded message changes nothing.
    """
    try:
        message = decode(data)
    except ProtocolError as exc:
        assert exc.code in ErrorCode
        return
    again = decode(encode(message))
    assert type(again) is type(message) and again.header() == message.header()
    assert encode(again) == encode(message)


@FUZZ
@given(frames)
def test_decode_raises_only_protocol_errors(data: bytes) -> None:
    decodes_or_refuses(data)


@FUZZ
@given(header_mutations())
def test_decode_of_mutated_headers_raises_only_protocol_errors(data: bytes) -> None:
    decodes_or_refuses(data)


@FUZZ
@given(payloads)
def test_decode_tensors_raises_only_protocol_errors(data: bytes) -> None:
    for expected in (None, SHAPES):
        try:
            tensors = decode_tensors(data, expected)
        except ProtocolError as exc:
            assert exc.code == "invalid_update"
            continue
        assert all(t.dtype == np.float32 for t in tensors.values())
        assert expected is None or {n: t.shape for n, t in tensors.items()} == expected


def check_sent(frames_out: list[bytes]) -> list[Any]:
    """Everything an endpoint sends is a valid frame, and error messages stay within the schema's bound."""
    sent = [decode(f) for f in frames_out]
    assert all(len(m.message) <= MAX_ERROR_MESSAGE_CHARS for m in sent if isinstance(m, Error))
    return sent


CAP_BYTES, CAP_MESSAGES = 8192, 2


@FUZZ
@given(st.booleans(), actions)
def test_server_endpoint_never_raises_and_stays_consistent(handshake: bool, script: list[tuple[str, Any]]) -> None:
    server = ServerProtocol(
        join_token="tok",
        max_frame_bytes=16_384,
        max_message_bytes=16_384,
        max_partial_bytes=CAP_BYTES,
        max_partial_messages=CAP_MESSAGES,
    )
    if handshake:
        script = [("recv", encode(Hello([1], "tok", None, "python", 4096))), *script]
    sent_tasks: set[str] = set()
    for kind, value in script:
        was_closed = server.state is State.CLOSED
        if kind == "task":
            server.send_task(value, encode(Task("train", value, "r", 1, TINY, {}, DELTA)))
            if not was_closed:
                sent_tasks.add(value)
        else:
            events = server.receive(value)
            if any(isinstance(e, HelloReceived) for e in events):
                server.accept(Welcome(1, "c", 1, "r", 16_384, 10))
            if was_closed:
                assert events == []
        out = check_sent(server.data_to_send())
        assert server.state in State
        assert server.in_flight <= sent_tasks
        assert server.held_bytes <= CAP_BYTES and server._reassembler.partial_messages <= CAP_MESSAGES
        if was_closed:  # CLOSED is absorbing: no state change, no event, nothing sent
            assert out == [] and server.state is State.CLOSED
        elif server.state is State.CLOSED:
            assert isinstance(out[-1], Error) and out[-1].fatal
            assert server.close_code in (1002, 1008, 1009, 1011) and server.held_bytes == 0
        if not handshake:
            assert server.state is not State.OPEN or server.hello is not None


@FUZZ
@given(st.booleans(), actions)
def test_client_endpoint_never_raises_and_stays_consistent(welcomed: bool, script: list[tuple[str, Any]]) -> None:
    client = ClientProtocol(max_frame_bytes=16_384, max_partial_bytes=CAP_BYTES, max_partial_messages=CAP_MESSAGES)
    if welcomed:
        client.receive(encode(Welcome(1, "c", 1, "r", 16_384, 10)))
    for kind, value in script:
        if kind == "task":  # the coordinator's side of the script: feed the client a task frame
            value = encode(Task("train", value, "r", 1, TINY, {}, DELTA))
        was_closed = client.state is State.CLOSED
        events = client.receive(value)
        out = check_sent(client.data_to_send())
        assert client.state in State
        assert client.held_bytes <= CAP_BYTES
        if was_closed:
            assert events == [] and out == [] and client.state is State.CLOSED
