"""Regenerate `vectors/encodings.json`: the tensor encodings of SPEC §2.1, byte for byte.

The levels and scales are computed here from the spec's text, not through any Pollen
codec, so the vectors test the codecs (Python, JS, Rust) rather than echo them; the
worked example of the spec is asserted literally. Float32 values travel as
little-endian hex, so NaN, infinity, -0.0 and every rounding are exact in each language.

* `encode`: tensors (and, for stochastic rounding, the uniforms u_i) with the exact
  safetensors payload a sender writes and the float32 values a receiver decodes.
* `unencodable`: values a sender must refuse to encode (fp16 overflow, NaN, infinity).
* `refused`: payloads a receiver must refuse with invalid_update.

Run from the repo root:
    python protocol/tools/make_encoding_vectors.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save

OUT = Path(__file__).resolve().parents[1] / "vectors" / "encodings.json"
CHUNK = 256


def f32_hex(values: Any) -> str:
    return np.asarray(values, "<f4").tobytes().hex()


def int8_reference(x: np.ndarray, u: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §2.1's int8, value by value in float32."""
    flat = x.astype(np.float32).ravel()
    scales = np.array(
        [np.float32(np.abs(flat[c : c + CHUNK]).max()) / np.float32(127) for c in range(0, flat.size, CHUNK)],
        np.float32,
    )
    q = np.empty(flat.size, np.int8)
    for i, v in enumerate(flat):
        s = scales[i // CHUNK]
        r = np.float32(0) if s == 0 else np.float32(v / s)
        level = np.rint(r) if u is None else np.floor(np.float32(r + u[i]))
        q[i] = int(min(127, max(-127, level)))
    return q.reshape(x.shape), scales


def encoded(tensors: dict[str, np.ndarray], encoding: str, uniforms: dict[str, np.ndarray] | None = None) -> bytes:
    if encoding == "fp16":
        return save({n: t.astype(np.float16) for n, t in tensors.items()})
    out: dict[str, np.ndarray] = {}
    for n, t in tensors.items():
        out[n], out[n + ":scales"] = int8_reference(t, None if uniforms is None else uniforms[n])
    return save(out)


def decoded(tensors: dict[str, np.ndarray], encoding: str, payload: bytes) -> dict[str, str]:
    from safetensors.numpy import load

    files = load(payload)
    if encoding == "fp16":
        return {n: f32_hex(files[n].astype(np.float32)) for n in tensors}
    out = {}
    for n in tensors:
        q, s = files[n].ravel(), files[n + ":scales"]
        out[n] = f32_hex([np.float32(q[i]) * s[i // CHUNK] for i in range(q.size)])
    return out


def encode_cases() -> list[dict[str, Any]]:
    rng = np.random.default_rng(20261123)
    wave = (np.sin(np.arange(300)) * np.arange(300) / 100).astype(np.float32)
    tiny = {
        "layers.0.weight": (np.arange(8, dtype=np.float32).reshape(2, 4) - 3.5) / 8,
        "layers.0.bias": np.array([0.5, -0.25], np.float32),
    }
    fp16_edges = np.array(
        [1.0, -0.5, 1 / 3, 0.1, 65504, -65504, 6e-8, 1e-9, 2049, 2051, -0.0, 0.0, 5.960464477539063e-08],
        np.float32,
    )
    zero_chunk = np.concatenate([np.zeros(CHUNK, np.float32), np.array([0.5, -2, 0, 1e-3], np.float32)])
    cases: list[tuple[str, str, dict[str, np.ndarray], dict[str, np.ndarray] | None]] = [
        ("fp16-rounding-and-edges", "fp16", {"w": fp16_edges}, None),
        ("fp16-a-model", "fp16", tiny, None),
        ("int8-worked-example", "int8", {"w": np.array([1.0, -0.5, 0.25, 0.0, -1.0], np.float32)}, None),
        ("int8-two-chunks-nearest", "int8", {"w": wave.reshape(3, 100)}, None),
        ("int8-a-zero-chunk", "int8", {"w": zero_chunk}, None),
        ("int8-a-model", "int8", tiny, None),
        ("int8-stochastic", "int8", {"w": wave}, {"w": rng.random(300, dtype=np.float32)}),
        (
            "int8-stochastic-edges",  # u just below 1 on exact levels, u = 0 on fractions: never past ±127
            "int8",
            {"w": np.array([1.0, -1.0, 0.5, -0.25, 0.0, 0.999], np.float32)},
            {"w": np.array([0.99999994, 0.99999994, 0.0, 0.0, 0.5, 0.99999994], np.float32)},
        ),
    ]
    out = []
    for name, encoding, tensors, uniforms in cases:
        payload = encoded(tensors, encoding, uniforms)
        case: dict[str, Any] = {
            "name": name,
            "encoding": encoding,
            "tensors": {n: {"shape": list(t.shape), "values_hex": f32_hex(t)} for n, t in sorted(tensors.items())},
            "payload_hex": payload.hex(),
            "decoded_hex": decoded(tensors, encoding, payload),
        }
        if uniforms is not None:
            case["uniforms_hex"] = {n: f32_hex(u) for n, u in uniforms.items()}
        out.append(case)
    example = out[2]
    from safetensors.numpy import load

    files = load(bytes.fromhex(example["payload_hex"]))
    assert files["w"].tolist() == [127, -64, 32, 0, -127], files["w"]
    assert files["w:scales"].view("<u4").tolist() == [0x3C010204]
    return out


def unencodable() -> list[dict[str, Any]]:
    return [
        {"name": n, "encoding": e, "values_hex": f32_hex(v)}
        for n, e, v in [
            ("fp16-beyond-65504", "fp16", [1.0, 65504.5]),
            ("fp16-large", "fp16", [-1e6]),
            ("fp16-nan", "fp16", [0.0, math.nan]),
            ("fp16-infinity", "fp16", [math.inf]),
            ("int8-nan", "int8", [1.0, math.nan]),
            ("int8-infinity", "int8", [-math.inf, 0.0]),
        ]
    ]


def refused() -> list[dict[str, Any]]:
    levels = np.zeros(300, np.int8)
    ones = np.ones(2, np.float32)
    cases = [
        ("int8-without-scales", {"w": levels}),
        ("scales-without-int8", {"w": np.zeros(300, np.float32), "w:scales": ones}),
        ("scales-alone", {"w:scales": ones}),
        ("wrong-number-of-scales", {"w": levels, "w:scales": np.ones(3, np.float32)}),
        ("scales-of-rank-2", {"w": levels, "w:scales": np.ones((1, 2), np.float32)}),
        ("fp16-scales", {"w": levels, "w:scales": np.ones(2, np.float16)}),
        ("int8-scales", {"w": levels, "w:scales": np.ones(2, np.int8)}),
        ("nan-scale", {"w": levels, "w:scales": np.array([1, math.nan], np.float32)}),
        ("infinite-scale", {"w": levels, "w:scales": np.array([math.inf, 1], np.float32)}),
        ("negative-scale", {"w": levels, "w:scales": np.array([1, -1], np.float32)}),
        ("level-minus-128", {"w": np.full(300, -128, np.int8), "w:scales": ones}),
    ]
    return [{"name": n, "payload_hex": save(t).hex(), "error": "invalid_update"} for n, t in cases]


def main() -> None:
    vectors = {"version": 1, "encode": encode_cases(), "unencodable": unencodable(), "refused": refused()}
    OUT.write_text(json.dumps(vectors, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
