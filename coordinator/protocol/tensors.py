"""Tensors as safetensors bytes (SPEC §2) and their checks at the boundary."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from coordinator.protocol.errors import ErrorCode, ProtocolError

Tensors = dict[str, np.ndarray]


def encode_tensors(tensors: Mapping[str, np.ndarray]) -> bytes:
    return save({name: np.ascontiguousarray(t, dtype=np.float32) for name, t in tensors.items()})


def decode_tensors(data: bytes) -> Tensors:
    try:
        return load(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise ProtocolError(ErrorCode.INVALID_UPDATE, f"payload is not a valid safetensors file: {exc}") from None


def check_tensors(tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Names, shapes, dtype and finiteness, in that order, each with a precise message."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ProtocolError(ErrorCode.INVALID_UPDATE, f"tensor names differ: missing {missing}, unexpected {extra}")
    for name, shape in expected.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(shape):
            raise ProtocolError(ErrorCode.INVALID_UPDATE, f"{name}: shape {list(t.shape)}, expected {list(shape)}")
        if t.dtype != np.float32:
            raise ProtocolError(ErrorCode.INVALID_UPDATE, f"{name}: dtype {t.dtype}, expected float32")
        if not np.isfinite(t).all():
            raise ProtocolError(ErrorCode.INVALID_UPDATE, f"{name}: contains NaN or infinity")
