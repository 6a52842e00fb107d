"""Tensors as safetensors bytes (SPEC §2) and their checks at the boundary.

Decoding reads the safetensors container itself rather than through the
`safetensors` library: a peer's file is checked field by field (dtype in the
wire set, offsets in range, contiguous and matching the shape) before any
array is built, so every lie is a ProtocolError and never a KeyError or a
huge allocation.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors.numpy import save

from coordinator.protocol.encodings import (
    SCALES_SUFFIX,
    Encoding,
    chunk_count,
    dequantize_int8,
    quantize_int8,
    to_fp16,
)
from coordinator.protocol.errors import ErrorCode, ProtocolError, quote
from coordinator.protocol.limits import JsonLimits, load_json

Tensors = dict[str, np.ndarray]

# SPEC §2.1: float32, float16, and int8 levels with a float32 `NAME:scales` companion.
WIRE_DTYPES: dict[str, np.dtype[Any]] = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I8": np.dtype("i1")}
MAX_TENSORS_HEADER_BYTES = 1024 * 1024
MAX_RANK = 8
# A model has at most 64 layers of a few tensors each; names are `layers.<i>.<param>`.
TENSORS_HEADER_LIMITS = JsonLimits(max_object_keys=1024, max_depth=4)
LAYOUT_CACHE_SIZE = 32  # checked headers kept: a run's models and encodings, the global's and the deltas'
KEPT_HEADER_BYTES = 64 * 1024  # a 64-layer model's header is about 10 KB


def encode_tensors(
    tensors: Mapping[str, np.ndarray], encoding: Encoding = "fp32", rng: np.random.Generator | None = None
) -> bytes:
    """Tensors as safetensors in `encoding` (SPEC §2.1); int8 rounds stochastically with `rng`, else to nearest.

    Raises ValueError for a value the encoding cannot carry (fp16 beyond ±65504, anything not finite in int8).
    """
    if encoding == "fp32":
        return save({name: np.ascontiguousarray(t, dtype=np.float32) for name, t in tensors.items()})
    if encoding == "fp16":
        return save({name: to_fp16(t) for name, t in tensors.items()})
    out: dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        uniforms = None if rng is None else rng.random(np.size(t), dtype=np.float32)
        out[name], out[name + SCALES_SUFFIX] = quantize_int8(t, uniforms)
    return save(out)


def aligned_in_frame(data: bytes | memoryview, offset: int) -> tuple[bytes, bytes | memoryview]:
    """A safetensors payload laid out to sit `offset` bytes into a frame (SPEC §2): (new head, data section).

    The head is the 8-byte length and the JSON header, re-padded with spaces so that the data section
    starts at a multiple of 8 bytes from the frame's first byte; the data section is `data`'s own,
    not copied. Bytes that are not a safetensors file come back whole, as the head, for the receiver
    to refuse.
    """
    if len(data) < 8:
        return bytes(data), b""
    (length,) = struct.unpack_from("<Q", data)
    if length > MAX_TENSORS_HEADER_BYTES or 8 + length > len(data):
        return bytes(data), b""
    header = bytes(data[8 : 8 + length]).rstrip(b" ")
    padded = header + b" " * (-(offset + 8 + len(header)) % 8)
    return struct.pack("<Q", len(padded)) + padded, memoryview(data)[8 + length :]


# Readable names of the safetensors dtypes a peer might declare, for the refusal's message.
_DTYPE_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_UPDATE, f"payload is not a valid safetensors file: {message}")


def _shown(value: Any) -> str:
    """A short printable string as is, anything else quoted and cut."""
    return value if isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable() else quote(value, 40)


def _is_int(value: Any) -> bool:
    return type(value) is int


def _entry(name: str, info: Any) -> tuple[int, int, np.dtype[Any], tuple[int, ...]]:
    """One header entry, checked: (start, end, dtype, shape)."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise _invalid(f"{_shown(name)}: an entry holds exactly dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in WIRE_DTYPES:
        shown = _shown(dtype)
        raise _invalid(
            f"{_shown(name)}: dtype {_DTYPE_NAMES.get(shown, shown)}, expected float32, float16 or int8: "
            f"dtype {shown} is not allowed (allowed: {', '.join(sorted(WIRE_DTYPES))})"
        )
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(_is_int(d) and d >= 0 for d in shape):
        raise _invalid(f"{_shown(name)}: shape must be at most {MAX_RANK} non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
        raise _invalid(f"{_shown(name)}: data_offsets must be two integers")
    start, end = offsets
    if not 0 <= start <= end:
        raise _invalid(f"{_shown(name)}: data_offsets [{start}, {end}] are not an ascending range")
    need = math.prod(shape) * WIRE_DTYPES[dtype].itemsize
    if end - start != need:
        raise _invalid(f"{_shown(name)}: shape {shape} needs {need} bytes, data_offsets hold {end - start}")
    return start, end, WIRE_DTYPES[dtype], tuple(shape)


def decode_tensors(data: bytes | memoryview, expected: Mapping[str, tuple[int, ...]] | None = None) -> Tensors:
    """Decode a safetensors file of wire dtypes into float32 tensors; F32 ones are read-only views of `data`.

    With `expected`, names and shapes are checked on the raw wire arrays, before any fp16 or int8
    tensor is widened, so a reply of the wrong model never costs a float32 allocation.
    Any malformed or lying file raises ProtocolError(invalid_update).
    """
    if len(data) < 8:
        raise _invalid(f"{len(data)} bytes are shorter than the 8-byte header length")
    (length,) = struct.unpack_from("<Q", data)
    if length > MAX_TENSORS_HEADER_BYTES or 8 + length > len(data):
        raise _invalid(f"header length {length} does not fit a file of {len(data)} bytes")
    header = bytes(data[8 : 8 + length])
    entries, covered = (_kept_layout if length <= KEPT_HEADER_BYTES else _layout)(header)
    body = memoryview(data)[8 + length :]
    if covered != len(body):
        raise _invalid(f"tensors cover {covered} bytes of a data section of {len(body)}")
    arrays = {
        name: np.frombuffer(body, dtype, math.prod(shape), start).reshape(shape)
        for start, _, dtype, shape, name in entries
    }
    if expected is not None:
        _check_names_and_shapes({n: a for n, a in arrays.items() if not n.endswith(SCALES_SUFFIX)}, expected)
    return _to_float32(arrays)


Layout = tuple[tuple[tuple[int, int, np.dtype[Any], tuple[int, ...], str], ...], int]


def _layout(header: bytes) -> Layout:
    """A header's tensors as (start, end, dtype, shape, name) in file order, and the bytes they cover.

    Raises ProtocolError(invalid_update) for any header that is not a valid safetensors layout.
    """
    try:
        parsed = load_json(header.decode("utf-8"), TENSORS_HEADER_LIMITS)
    except UnicodeDecodeError:
        raise _invalid("header is not UTF-8") from None
    except ProtocolError as exc:
        raise _invalid(f"header: {exc.message}") from None
    if not isinstance(parsed, dict):
        raise _invalid("header is not a JSON object")
    metadata = parsed.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _invalid("__metadata__ must map strings to strings")
    entries = sorted(((*_entry(name, info), name) for name, info in parsed.items()), key=lambda e: (e[0], e[1], e[4]))
    covered = 0
    for start, end, _, _, name in entries:
        if start != covered:
            what = "overlaps the previous tensor" if start < covered else "leaves a gap before it"
            raise _invalid(f"{_shown(name)}: data_offsets start at {start}, which {what} (expected {covered})")
        covered = end
    return tuple(entries), covered


# Every honest client of a run sends the same header bytes (same model, same encoding), so a checked
# layout is kept for the next reply: parsing and checking it was half of decoding a mnist-mlp delta
# (28 us of 35). A header that fails is not kept and costs its full check each time, as before; only
# headers of up to KEPT_HEADER_BYTES are kept, so what a peer can make this hold stays small.
_kept_layout = functools.lru_cache(maxsize=LAYOUT_CACHE_SIZE)(_layout)


def _to_float32(arrays: dict[str, np.ndarray]) -> Tensors:
    """float32 tensors by name: F32 as views into the payload (a delta is checked and folded where it arrived;
    read-only), F16 upcast, int8 levels dequantised with their `:scales` (which are not tensors of their own)."""
    out: Tensors = {}
    for name, a in arrays.items():
        if name.endswith(SCALES_SUFFIX):
            if arrays.get(name[: -len(SCALES_SUFFIX)], np.empty(0)).dtype != np.int8:
                raise _invalid(f"{_shown(name)}: scales without an int8 tensor {_shown(name[: -len(SCALES_SUFFIX)])}")
            continue
        if a.dtype == np.float32:
            out[name] = a
        elif a.dtype == np.float16:
            out[name] = a.astype(np.float32)
        else:
            out[name] = _dequantized(name, a, arrays.get(name + SCALES_SUFFIX))
    return out


def _dequantized(name: str, q: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    if scales is None or scales.dtype != np.float32 or scales.shape != (chunk_count(q.size),):
        raise _invalid(f"{_shown(name)}: an int8 tensor needs {_shown(name + SCALES_SUFFIX)}, float32 of shape "
                       f"[{chunk_count(q.size)}]")  # fmt: skip
    if not np.isfinite(scales).all() or (scales.size and float(scales.min()) < 0):
        raise _invalid(f"{_shown(name)}: scales must be finite and not negative")
    if q.size and int(q.min()) == -128:
        raise _invalid(f"{_shown(name)}: int8 level -128 is outside the symmetric range ±127")
    return dequantize_int8(q, scales)


def check_tensors(
    tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]], *, finite: bool = True
) -> None:
    """Names, shapes, dtype and (unless the caller proves it in a pass of its own) finiteness, each precisely."""
    _check_names_and_shapes(tensors, expected)
    for name in expected:
        t = tensors[name]
        if t.dtype != np.float32:
            raise ProtocolError(ErrorCode.INVALID_UPDATE, f"{name}: dtype {t.dtype}, expected float32")
        if finite and not np.isfinite(t).all():
            raise ProtocolError(ErrorCode.INVALID_UPDATE, f"{name}: contains NaN or infinity")


def _check_names_and_shapes(tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ProtocolError(
            ErrorCode.INVALID_UPDATE, f"tensor names differ: missing {quote(missing)}, unexpected {quote(extra)}"
        )
    for name, shape in expected.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(shape):
            raise ProtocolError(ErrorCode.INVALID_UPDATE, f"{name}: shape {list(t.shape)}, expected {list(shape)}")
