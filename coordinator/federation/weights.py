"""The global model's weights, serialised once per round.

Within a round the same global `ArrayRecord` is broadcast for evaluation, written as
the round's checkpoint, and broadcast again for the next round's training (Flower's
`Strategy.start` passes the one object to all three). Serialising it is O(model)
work and memory each time, so the last encoding is kept and reused while the
strategy hands over the very same object.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord

from coordinator.protocol.tensors import Tensors, decode_tensors, encode_tensors


@dataclass(frozen=True)
class EncodedWeights:
    tensors: Tensors  # float32 arrays by PyTorch name (read-only)
    safetensors: bytes  # the same, as the wire and the checkpoint carry them


class WeightsEncoder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[ArrayRecord, EncodedWeights] | None = None
        self.encodings = 0  # how many times weights were actually serialised

    def encode(self, arrays: ArrayRecord) -> EncodedWeights:
        """`arrays` as float32 tensors and safetensors bytes; free when `arrays` is the last object encoded."""
        with self._lock:
            if self._last is not None and self._last[0] is arrays:
                return self._last[1]
        safetensors = encode_tensors({name: np.asarray(a.numpy(), dtype=np.float32) for name, a in arrays.items()})
        # The arrays are read from the encoding itself (views, once decoding is zero-copy): one copy, not two.
        # Strategies line records up by position (FedAvgM's momentum): keep the record's order of names.
        decoded = decode_tensors(safetensors)
        encoded = EncodedWeights({name: decoded[name] for name in arrays}, safetensors)
        with self._lock:
            self._last = (arrays, encoded)
            self.encodings += 1
        return encoded
