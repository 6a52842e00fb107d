"""The shared `protocol/vectors` must decode, re-encode byte for byte, and fail with the listed codes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from coordinator.protocol import (
    ProtocolError,
    Result,
    decode,
    decode_frame,
    decode_tensors,
    encode,
    encode_frame,
    encode_tensors,
    parse,
)
from coordinator.protocol.tensors import aligned_in_frame
from coordinator.resources import protocol_dir

VECTORS = json.loads((protocol_dir() / "vectors" / "frames.json").read_text())


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_vector_round_trips(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["frame_hex"])
    frame = decode_frame(data)
    assert frame.header == case["header"]
    assert frame.payload.hex() == case["payload_hex"]
    assert encode_frame(frame.header, frame.payload) == data
    assert encode(decode(data)) == data


def test_a_tensors_payload_is_laid_out_so_its_data_starts_8_aligned_in_the_frame() -> None:
    carrying = [c for c in VECTORS["valid"] if c["payload_hex"] and c["header"]["type"] != "chunk"]
    assert len(carrying) >= 3
    for case in carrying:
        payload = bytes.fromhex(case["payload_hex"])
        want = decode_tensors(payload)
        for offset in range(16):
            head, data = aligned_in_frame(payload, offset)
            assert (offset + len(head)) % 8 == 0
            moved = decode_tensors(head + bytes(data))
            assert moved.keys() == want.keys() and all(np.array_equal(moved[k], want[k]) for k in want)
    assert aligned_in_frame(b"\x01\x02", 3) == (b"\x01\x02", b"")
    # A delta as the codec writes it (padded for offset 0) goes out aligned: the receiver's views are aligned.
    delta = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}
    frame = encode(Result("t-123", 5, {"train_loss": 0.5}, encode_tensors(delta)))
    reply = parse(decode_frame(memoryview(bytearray(frame))))  # a buffer of its own, as a socket read gives
    assert isinstance(reply, Result)
    received = decode_tensors(reply.delta)
    assert all(t.flags.aligned for t in received.values())
    assert all(np.array_equal(received[k], delta[k]) for k in delta)


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid_vector_is_refused_with_its_code(case: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(bytes.fromhex(case["frame_hex"]))
    assert info.value.code == case["error"]


def test_header_is_canonical_json() -> None:
    frame = encode_frame({"type": "heartbeat", "seq": 1, "a": 1.0, "b": 1e-05})
    assert frame[8:] == b'{"a":1,"b":0.00001,"seq":1,"type":"heartbeat"}'


@pytest.mark.parametrize("case", VECTORS["tensors"]["valid"], ids=lambda c: c["name"])
def test_valid_tensors_vector_decodes(case: dict[str, Any]) -> None:
    tensors = decode_tensors(bytes.fromhex(case["payload_hex"]))
    assert sorted(tensors) == sorted(case["tensors"])
    for name, want in case["tensors"].items():
        assert list(tensors[name].shape) == want["shape"] and tensors[name].dtype == np.float32
        assert tensors[name].ravel().tolist() == want["values"]


@pytest.mark.parametrize("case", VECTORS["tensors"]["invalid"], ids=lambda c: c["name"])
def test_invalid_tensors_vector_is_refused(case: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_tensors(bytes.fromhex(case["payload_hex"]))
    assert info.value.code == case["error"]


ENCODINGS = json.loads((protocol_dir() / "vectors" / "encodings.json").read_text())


def f32(hex_values: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hex_values), "<f4")


class GivenUniforms:
    """Stands in for a sender's generator: hands out the vector's u_i, tensor by tensor."""

    def __init__(self, uniforms: list[np.ndarray]) -> None:
        self.uniforms = iter(uniforms)

    def random(self, size: int, dtype: Any) -> np.ndarray:
        u = next(self.uniforms)
        assert u.size == size and dtype == np.float32
        return u


@pytest.mark.parametrize("case", ENCODINGS["encode"], ids=lambda c: c["name"])
def test_encoding_vector_is_written_and_read_byte_for_byte(case: dict[str, Any]) -> None:
    tensors = {n: f32(t["values_hex"]).reshape(t["shape"]) for n, t in case["tensors"].items()}
    uniforms = case.get("uniforms_hex")
    rng = None if uniforms is None else GivenUniforms([f32(uniforms[n]) for n in tensors])
    assert encode_tensors(tensors, case["encoding"], rng).hex() == case["payload_hex"]  # type: ignore[arg-type]
    shapes = {n: tuple(t["shape"]) for n, t in case["tensors"].items()}
    out = decode_tensors(bytes.fromhex(case["payload_hex"]), shapes)
    assert {n: t.tobytes().hex() for n, t in out.items()} == case["decoded_hex"]


@pytest.mark.parametrize("case", ENCODINGS["unencodable"], ids=lambda c: c["name"])
def test_unencodable_vector_is_refused_by_the_sender(case: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        encode_tensors({"w": f32(case["values_hex"])}, case["encoding"], np.random.default_rng(0))


@pytest.mark.parametrize("case", ENCODINGS["refused"], ids=lambda c: c["name"])
def test_refused_encoding_vector_is_invalid_update(case: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_tensors(bytes.fromhex(case["payload_hex"]))
    assert info.value.code == case["error"]
