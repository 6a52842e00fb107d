"""The global model's weights, laid out for the wire once per round, without a copy of their own.

Within a round the same global `ArrayRecord` is broadcast for evaluation, written as
the round's checkpoint, and broadcast again for the next round's training (Flower's
`Strategy.start` passes the one object to all three), so the last encoding is kept and
reused while the strategy hands over the very same object.

An encoding holds no copy of the weights: Flower keeps each `Array` as the bytes of a
`.npy` file, whose data section is the tensor itself, so the tensors are read-only views
of the record's own buffers and the safetensors file the wire carries is a short header
followed by those same buffers (`payload`). The round's broadcast is sent from them, and
so is the checkpoint, where the database takes a blob in parts (SQLite).
"""

from __future__ import annotations

import io
import json
import math
import struct
import threading
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord

from coordinator.protocol.tensors import Tensors

_NPY = "numpy.ndarray"  # Flower's stype for Arrays made from numpy (np.save's format)
_F32 = np.dtype("<f4")


@dataclass(frozen=True)
class EncodedWeights:
    tensors: Tensors  # float32 arrays by PyTorch name, in the record's order (read-only)

    def payload(self, offset: int = 0) -> list[bytes | memoryview]:
        """The weights as a safetensors file (SPEC §2), in parts: its head, then each tensor's own bytes.

        The head is padded so that the data section starts at a multiple of 8 bytes from the
        start of a frame in which the file begins `offset` bytes in. Tensors are laid out in
        name order, as the `safetensors` library writes them; nothing is copied.
        """
        names = sorted(self.tensors)
        entries, start = {}, 0
        for name in names:
            t = self.tensors[name]
            entries[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [start, start + t.nbytes]}
            start += t.nbytes
        header = json.dumps(entries, separators=(",", ":")).encode()
        header += b" " * (-(offset + 8 + len(header)) % 8)
        return [
            struct.pack("<Q", len(header)) + header,
            *(self.tensors[n].reshape(-1).view(np.uint8).data for n in names),
        ]

    @property
    def safetensors(self) -> bytes:
        """The safetensors file in one piece: a copy of the weights."""
        return b"".join(self.payload())


class WeightsEncoder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[ArrayRecord, EncodedWeights] | None = None
        self.encodings = 0  # how many times weights were actually encoded

    def encode(self, arrays: ArrayRecord) -> EncodedWeights:
        """`arrays` as float32 tensors for the wire; free when `arrays` is the last object encoded."""
        with self._lock:
            if self._last is not None and self._last[0] is arrays:
                return self._last[1]
        # Strategies line records up by position (FedAvgM's momentum): keep the record's order of names.
        encoded = EncodedWeights({name: float32_view(a) for name, a in arrays.items()})
        with self._lock:
            self._last = (arrays, encoded)
            self.encodings += 1
        return encoded


def float32_view(array: Array) -> np.ndarray:
    """`array` as a read-only float32 ndarray: a view of its own buffer when it is a C-ordered float32 `.npy`.

    Anything else (another dtype or serialisation) is converted, once, into an array of its own.
    """
    view = npy_float32_view(array)
    if view is not None:
        return view
    converted = np.ascontiguousarray(array.numpy(), dtype=np.float32)
    converted.flags.writeable = False
    return converted


def npy_float32_view(array: Array) -> np.ndarray | None:
    """`array`'s data read in place (read-only), if it is a non-empty C-ordered float32 `.npy`; else None."""
    size = math.prod(array.shape)
    if array.stype != _NPY or not size:
        return None
    stream = io.BytesIO(array.data[:4096])  # a .npy header is 128 bytes, rarely more
    header = None
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(stream)
    except ValueError:
        return None
    start = len(array.data) - size * _F32.itemsize
    if header is None or start != stream.tell():
        return None
    shape, fortran, dtype = header
    if dtype != _F32 or fortran or tuple(shape) != tuple(array.shape):
        return None
    view = np.frombuffer(array.data, _F32, size, start).reshape(shape)
    return view if view.flags.aligned else None


def npy_array(ndarray: np.ndarray) -> Array:
    """`Array(ndarray)` as Flower makes it (the bytes of a `.npy` file), copying the data once, not three times.

    Flower's own goes through `np.save` into a `BytesIO` and then `getvalue()`; this writes the same
    header and joins the data to it.
    """
    contiguous = np.asarray(ndarray)
    if not contiguous.flags.c_contiguous:
        contiguous = contiguous.copy()
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(contiguous))
    data = b"".join((head.getvalue(), contiguous.reshape(-1).view(np.uint8).data))
    return Array(dtype=str(contiguous.dtype), shape=tuple(contiguous.shape), stype=_NPY, data=data)
