"""Tensor encodings (SPEC §2.1): what each carries, how exactly, and what a decoder refuses."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save

from coordinator.protocol.encodings import CHUNK, dequantize_int8, negotiate, quantize_int8
from coordinator.protocol.errors import ProtocolError
from coordinator.protocol.tensors import decode_tensors, encode_tensors

RNG = np.random.default_rng(7)
TENSORS = {
    "layers.0.weight": (RNG.standard_normal((3, 300)) * 0.05).astype(np.float32),
    "layers.0.bias": np.array([0.5, -0.25, 0.0], np.float32),
}
MODEL_BYTES = sum(t.nbytes for t in TENSORS.values())


def test_fp32_round_trips_exactly_as_read_only_views() -> None:
    out = decode_tensors(encode_tensors(TENSORS))
    for name, t in TENSORS.items():
        np.testing.assert_array_equal(out[name], t)
        assert not out[name].flags.writeable


def test_fp16_halves_the_bytes_and_rounds_to_nearest() -> None:
    data = encode_tensors(TENSORS, "fp16")
    out = decode_tensors(data)
    for name, t in TENSORS.items():
        np.testing.assert_array_equal(out[name], t.astype(np.float16).astype(np.float32))
        assert out[name].dtype == np.float32
    assert len(data) < 0.55 * MODEL_BYTES + 512


def test_fp16_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match="65504"):
        encode_tensors({"w": np.array([7e4], np.float32)}, "fp16")


def test_int8_is_within_half_a_level_and_a_quarter_of_the_bytes() -> None:
    data = encode_tensors(TENSORS, "int8")
    out = decode_tensors(data)
    for name, t in TENSORS.items():
        flat = t.reshape(-1)
        scales = np.abs(np.pad(flat, (0, -flat.size % CHUNK))).reshape(-1, CHUNK).max(axis=1) / 127
        step = np.repeat(scales, CHUNK)[: flat.size]
        assert np.all(np.abs(out[name].reshape(-1) - flat) <= step / 2 + 1e-9)
    assert len(data) < 0.27 * MODEL_BYTES + 512
    assert set(out) == set(TENSORS)  # the scales are not tensors of their own


def test_int8_levels_and_scales_are_exact() -> None:
    x = np.array([1.0, -0.5, 0.25, 0.0, -1.0], np.float32)
    q, scales = quantize_int8(x)
    assert scales.tolist() == [np.float32(1.0) / np.float32(127)]
    assert q.tolist() == [127, -64, 32, 0, -127]  # -63.5 and 31.75: ties to even, then nearest
    np.testing.assert_array_equal(dequantize_int8(q, scales), q.astype(np.float32) * scales[0])


def test_an_all_zero_chunk_has_scale_zero_and_level_zero() -> None:
    q, scales = quantize_int8(np.zeros(CHUNK + 3, np.float32))
    assert scales.tolist() == [0.0, 0.0] and not q.any()


def test_stochastic_rounding_is_unbiased_bounded_and_seeded() -> None:
    x = np.full(CHUNK, 0.3, np.float32)
    x[0] = 1.0  # scale 1/127: 0.3 lies between levels 38 and 39
    ratio = np.float32(0.3) / (np.float32(1.0) / np.float32(127))
    rngs = (np.random.default_rng(s) for s in range(400))
    draws = np.stack([quantize_int8(x, rng.random(x.size, dtype=np.float32))[0][1:] for rng in rngs])
    assert set(np.unique(draws)) <= {np.floor(ratio), np.ceil(ratio)}
    mean = draws.astype(np.float64).mean()
    assert abs(mean - ratio) < 4 * 0.5 / np.sqrt(draws.size)  # within 4 standard errors
    first, again = (encode_tensors({"x": x}, "int8", np.random.default_rng(1)) for _ in range(2))
    assert first == again != encode_tensors({"x": x}, "int8", np.random.default_rng(2))


def test_a_decoder_takes_any_mix_of_encodings() -> None:
    q, scales = quantize_int8(TENSORS["layers.0.weight"])
    mixed = save({"layers.0.weight": q, "layers.0.weight:scales": scales, "layers.0.bias": TENSORS["layers.0.bias"]})
    out = decode_tensors(mixed)
    np.testing.assert_array_equal(out["layers.0.bias"], TENSORS["layers.0.bias"])
    np.testing.assert_array_equal(out["layers.0.weight"], dequantize_int8(q, scales))


LEVELS = np.zeros(300, np.int8)
REFUSED = [
    ("int8 without scales", {"w": LEVELS}, "needs w:scales"),
    ("scales without int8", {"w": np.zeros(300, np.float32), "w:scales": np.ones(2, np.float32)}, "scales without"),
    ("wrong number of scales", {"w": LEVELS, "w:scales": np.ones(3, np.float32)}, "of shape [2]"),
    ("float16 scales", {"w": LEVELS, "w:scales": np.ones(2, np.float16)}, "float32 of shape [2]"),
    ("NaN scale", {"w": LEVELS, "w:scales": np.array([1, np.nan], np.float32)}, "finite and not negative"),
    ("negative scale", {"w": LEVELS, "w:scales": np.array([1, -1], np.float32)}, "finite and not negative"),
    ("level -128", {"w": np.full(300, -128, np.int8), "w:scales": np.ones(2, np.float32)}, "-128"),
    ("int16", {"w": np.zeros(3, np.int16)}, "dtype I16 is not allowed"),
    ("float64", {"w": np.zeros(3, np.float64)}, "dtype F64 is not allowed"),
]


@pytest.mark.parametrize(("tensors", "says"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_a_decoder_refuses_every_malformed_encoding(tensors: dict[str, np.ndarray], says: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_tensors(save(tensors))
    assert info.value.code.value == "invalid_update" and says in info.value.message


@pytest.mark.parametrize(
    ("shapes", "says"),
    [({"w": (301,)}, "w: shape [300], expected [301]"), ({"v": (300,)}, "missing ['v'], unexpected ['w']")],
)
def test_a_wrong_model_is_refused_before_anything_is_widened(
    monkeypatch: pytest.MonkeyPatch, shapes: dict[str, tuple[int, ...]], says: str
) -> None:
    widened: list[str] = []
    monkeypatch.setattr("coordinator.protocol.tensors.dequantize_int8", lambda q, s: widened.append("int8"))
    payload = save({"w": np.ones(300, np.int8), "w:scales": np.ones(2, np.float32)})
    with pytest.raises(ProtocolError) as info:
        decode_tensors(payload, shapes)
    assert says in info.value.message and widened == []
    decode_tensors(payload, {"w": (300,)})
    assert widened == ["int8"]  # the patch is live: a right-shaped reply is widened


def test_negotiation_takes_the_preference_only_when_the_peer_offers_it() -> None:
    assert negotiate(["int8", "fp32"], "int8") == "int8"
    assert negotiate(["fp16"], "int8") == "fp32"
    assert negotiate(None, "fp16") == "fp32"
