"""Regression tests: hostile headers and payloads are refused by name, never crash the codec."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from coordinator.protocol import Error, ProtocolError, decode, decode_tensors, encode, encode_tensors
from coordinator.protocol.limits import MAX_ERROR_MESSAGE_CHARS, MAX_SAFE_INTEGER, JsonLimits, load_json


def raw_frame(header_json: str) -> bytes:
    body = header_json.encode()
    return b"PLN1" + struct.pack("<I", len(body)) + body


def result_with_metric(value: str) -> bytes:
    return raw_frame('{"metrics":{"train_loss":' + value + '},"num_examples":1,"reply_to":"t","type":"result"}')


def safetensors(dtype: str, shape: list[int], data: bytes) -> bytes:
    body = json.dumps({"w": {"dtype": dtype, "shape": shape, "data_offsets": [0, len(data)]}}).encode()
    return struct.pack("<Q", len(body)) + body + data


def refused(data: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(data)
    return info.value


@pytest.mark.parametrize(("dtype", "size"), [("BF16", 2), ("F8_E4M3", 1), ("F8_E5M2", 1), ("I16", 2), ("I64", 8)])
def test_a_delta_in_a_dtype_outside_the_wire_set_is_refused_by_name(dtype: str, size: int) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_tensors(safetensors(dtype, [4], b"\0" * 4 * size))
    assert info.value.code == "invalid_update"
    assert f"dtype {dtype} is not allowed" in info.value.message


def test_an_f32_delta_still_decodes() -> None:
    tensors = decode_tensors(encode_tensors({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}))
    assert tensors["w"].tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("digits", [400, 5000])
def test_a_metric_with_hundreds_of_digits_is_refused_at_parse_time(digits: int) -> None:
    error = refused(result_with_metric("1" + "0" * digits))
    assert error.code == "invalid_message" and "2^53" in error.message
    assert len(error.message) < 200  # the digits are quoted cut, not echoed


@pytest.mark.parametrize("value", ["1e400", "-1e400", "1.7e308", "-2e30"])
def test_huge_floats_are_refused(value: str) -> None:
    assert refused(result_with_metric(value)).code == "invalid_message"


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_tokens_are_refused(token: str) -> None:
    assert refused(result_with_metric(token)).code == "bad_frame"


def test_a_metric_at_the_bound_is_accepted() -> None:
    assert decode(result_with_metric("1e30")).metrics == {"train_loss": 1e30}  # type: ignore[union-attr]


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    assert refused(raw_frame('{"seq":1,"type":"heartbeat","x":' + "[" * 5000 + "]" * 5000 + "}")).code == (
        "invalid_message"
    )


def test_a_huge_declared_header_length_is_refused_before_reading() -> None:
    assert refused(b"PLN1" + struct.pack("<I", 0xFFFFFFFF) + b"{}").code == "frame_too_large"


def test_an_unknown_type_is_quoted_cut() -> None:
    error = refused(raw_frame(json.dumps({"type": "x" * 4000})))
    assert error.code == "unknown_type" and len(error.message) < 120


def test_error_messages_are_cut_to_the_schema_limit_on_encode() -> None:
    frame = encode(Error("internal", "y" * 100_000))
    message = decode(frame).message  # type: ignore[union-attr]
    assert len(message) == MAX_ERROR_MESSAGE_CHARS and message.endswith("…")


def test_an_error_message_over_the_limit_is_refused_on_decode() -> None:
    header = {"type": "error", "code": "internal", "message": "z" * 1025, "reply_to": None, "fatal": False}
    assert refused(raw_frame(json.dumps(header))).code == "invalid_message"


# The bounded reader on its own: a frame's schema refuses most of these too, which would hide a bound that broke.
SMALL = JsonLimits(max_string_chars=8, max_key_chars=4, max_array_items=3, max_object_keys=2, max_depth=3)


@pytest.mark.parametrize("value", [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 0, -1])
def test_integers_within_2_53_are_read(value: int) -> None:
    assert load_json(f"[{value}]") == [value]


@pytest.mark.parametrize("token", [str(MAX_SAFE_INTEGER + 1), str(-MAX_SAFE_INTEGER - 1), "-" + "9" * 17, "9" * 17])
def test_integers_outside_2_53_are_refused(token: str) -> None:
    with pytest.raises(ProtocolError, match="2\\^53"):
        load_json(f"[{token}]")


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ('{"a": [[["x"]]]}', "nested deeper"),  # lists count towards the depth
        ('{"a": {"b": {"c": {}}}}', "nested deeper"),
        ('[["123456789"]]', "a string of 9"),  # strings inside lists are measured
        ('{"a": ["123456789"]}', "a string of 9"),
        ('{"a": "123456789"}', "a string of 9"),
        ("[[1, 2, 3, 4]]", "an array of 4"),
        ('[{"a": 1, "b": 2, "c": 3}]', "an object of 3"),
        ('[{"abcde": 1}]', "key"),
    ],
)
def test_each_bound_of_the_json_reader_holds_wherever_it_is_broken(text: str, what: str) -> None:
    with pytest.raises(ProtocolError, match=what):
        load_json(text, SMALL)


def test_a_document_at_every_bound_is_read() -> None:
    text = '{"abcd": [["12345678", 1, true]], "b": null}'
    assert load_json(text, SMALL) == {"abcd": [["12345678", 1, True]], "b": None}


def test_a_checked_tensors_header_is_kept_and_every_file_is_still_checked_whole() -> None:
    # Honest replies share one header: its layout is kept. What differs per file is checked every time.
    from coordinator.protocol import tensors

    tensors._kept_layout.cache_clear()
    good = encode_tensors({"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    assert decode_tensors(good, {"w": (2, 3)})["w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert decode_tensors(good, {"w": (2, 3)})["w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert tensors._kept_layout.cache_info().hits == 1
    with pytest.raises(ProtocolError, match="cover 24 bytes of a data section of 20"):
        decode_tensors(good[:-4])  # same header, short body
    with pytest.raises(ProtocolError, match="shape"):
        decode_tensors(good, {"w": (3, 2)})  # same header, another model
    bad = safetensors("F32", [2, 3], b"\0" * 20)  # 24 bytes announced, 20 sent
    for _ in range(2):
        with pytest.raises(ProtocolError, match="needs 24 bytes"):
            decode_tensors(bad)
    assert tensors._kept_layout.cache_info().currsize == 1  # a failed check is not kept
    big = {f"t{i:05d}" + "x" * 200: np.zeros(1, np.float32) for i in range(300)}  # a header over 64 KiB
    assert len(decode_tensors(encode_tensors(big))) == 300
    assert tensors._kept_layout.cache_info().currsize == 1
