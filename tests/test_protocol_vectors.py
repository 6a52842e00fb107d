"""The shared `protocol/vectors` must decode, re-encode byte for byte, and fail with the listed codes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from coordinator.protocol import ProtocolError, decode, decode_frame, decode_tensors, encode, encode_frame
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
