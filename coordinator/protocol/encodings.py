"""Tensor encodings on the wire (SPEC §2.1): fp32, fp16, and int8 with per-chunk scales.

Pure numpy, byte for byte what the spec says, so that the Python, JS and Rust codecs
agree on every shared vector:

* fp16 rounds to nearest even; a finite value beyond float16's range is an encoding
  error (a sender never turns a large value into infinity).
* int8 splits a tensor, in row-major order, into chunks of `CHUNK` values; each chunk
  has the scale max|x| / 127 (float32), and value i decodes to float32(q_i) × scale.
  Weights are rounded to the nearest level (ties to even); updates are rounded
  stochastically, q = floor(x / scale + u) with u uniform in [0, 1), which is unbiased:
  the mean of many clients' quantisation errors tends to zero instead of adding up.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Encoding = Literal["fp32", "fp16", "int8"]
ENCODINGS: tuple[Encoding, ...] = ("fp32", "fp16", "int8")
CHUNK = 256  # values per int8 scale
SCALES_SUFFIX = ":scales"  # the companion entry of an int8 tensor; `:` never occurs in a state_dict key
FP16_MAX = 65504.0
LEVELS = np.float32(127)


def to_fp16(x: np.ndarray) -> np.ndarray:
    """`x` as float16, nearest even; ValueError if a value is not finite or beyond ±65504."""
    if not np.isfinite(x).all() or (x.size and float(np.abs(x).max()) > FP16_MAX):
        raise ValueError("a value is not finite or beyond float16's ±65504")
    return np.asarray(x, np.float32).astype(np.float16)


def chunk_count(size: int) -> int:
    return math.ceil(size / CHUNK)


def quantize_int8(x: np.ndarray, uniforms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(q, scales): int8 levels of `x`'s shape and one float32 scale per chunk of `CHUNK` values.

    Without `uniforms`, levels are rounded to nearest (ties to even); with them (float32 in [0, 1),
    one per value, row-major), stochastically: the shared vectors fix them, a sender draws them.
    """
    flat = np.asarray(x, np.float32).reshape(-1)
    if not np.isfinite(flat).all():
        raise ValueError("a value is not finite")
    n, m = flat.size, chunk_count(flat.size)
    padded = np.zeros(m * CHUNK, np.float32)
    padded[:n] = flat
    scales = (np.abs(padded).reshape(m, CHUNK).max(axis=1) / LEVELS).astype(np.float32)
    per_value = np.repeat(scales, CHUNK)[:n]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(per_value > 0, flat / per_value, np.float32(0)).astype(np.float32)
    levels = np.rint(ratio) if uniforms is None else np.floor(ratio + np.asarray(uniforms, np.float32).reshape(n))
    q = np.clip(levels, -127, 127).astype(np.int8)
    return q.reshape(np.shape(x)), scales


def dequantize_int8(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32(q_i) × scales[i // CHUNK], in float32, in `q`'s shape."""
    flat = q.reshape(-1).astype(np.float32)
    full = flat.size // CHUNK
    flat[: full * CHUNK].reshape(full, CHUNK)[...] *= scales[:full, None]
    if flat.size > full * CHUNK:
        flat[full * CHUNK :] *= scales[full]
    return flat.reshape(q.shape)


def negotiate(offered: object, preferred: Encoding) -> Encoding:
    """The encoding to use: the coordinator's preference when the peer listed it, else fp32 (always spoken)."""
    return preferred if isinstance(offered, list) and preferred in offered else "fp32"
