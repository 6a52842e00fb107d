"""One phase's task for every node: its frame in each weights encoding, each made once and shared.

Nodes read the global weights in the encoding their `welcome` named (SPEC §2.1). The frame in
the run's own weights encoding is made when the phase opens, on the strategy's thread; one in
another encoding (a client that cannot read it gets fp32) is made the first time a node needs
it. Every node of an encoding is sent the same `SharedFrame`; an fp32 one is made of the
global weights' own buffers (`EncodedWeights.payload`), laid out so that the tensors sit
aligned in the frame (SPEC §2). `bytes_out` counts what was handed to nodes, whatever their
encodings.
"""

from __future__ import annotations

import threading

from coordinator.federation.weights import EncodedWeights
from coordinator.protocol.chunking import Buffer, SharedFrame
from coordinator.protocol.encodings import Encoding
from coordinator.protocol.tensors import aligned_in_frame, encode_tensors

_NARROW: dict[str, Encoding] = {"fp16": "fp16", "int8": "int8"}


class Broadcast:
    def __init__(self, head: bytes, weights: EncodedWeights, encoding: Encoding | None = "fp32") -> None:
        """`head`: the task frame up to its payload (prefix and header); `encoding`: the one made now (None:
        none, for a phase whose nodes are shards, which make their own)."""
        self._head = head
        self._weights = weights
        self._lock = threading.Lock()
        self._frames: dict[str, SharedFrame] = {}
        self.bytes_out = 0
        if encoding is not None:
            self.frame(encoding, count=False)

    @property
    def head(self) -> bytes:
        """The task frame up to its payload."""
        return self._head

    @property
    def weights(self) -> EncodedWeights:
        return self._weights

    def frame(self, encoding: str, max_frame_bytes: int | None = None, *, count: bool = True) -> SharedFrame:
        """The task in `encoding` (fp32 if unknown), counted in `bytes_out` as sent to one more node."""
        with self._lock:
            if encoding not in self._frames:
                self._frames[encoding] = SharedFrame(self._head, self._payload(encoding))
            frame = self._frames[encoding]
            if count:
                self.bytes_out += frame.wire_bytes() if max_frame_bytes is None else frame.wire_bytes(max_frame_bytes)
        return frame

    def _payload(self, encoding: str) -> list[Buffer]:
        narrow = _NARROW.get(encoding)
        if narrow is not None:  # weights round to nearest in int8: no rng
            head, data = aligned_in_frame(encode_tensors(self._weights.tensors, narrow), len(self._head))
            return [head, data]
        return self._weights.payload(len(self._head))
