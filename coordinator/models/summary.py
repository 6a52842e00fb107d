"""What a model spec amounts to: its parameters, their shapes and counts, the bytes of its weights per encoding."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from coordinator.models.layer_types import Shape
from coordinator.models.spec import ModelSpec
from coordinator.protocol.encodings import ENCODINGS, Encoding, chunk_count


@dataclass(frozen=True)
class Parameter:
    """One float tensor of the model, named as in PyTorch's `state_dict`."""

    name: str
    shape: Shape

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    def data_bytes(self, encoding: Encoding) -> int:
        """Its values' bytes on the wire (SPEC §2.1): int8 adds a float32 scale per `CHUNK` values."""
        if encoding == "fp32":
            return 4 * self.count
        if encoding == "fp16":
            return 2 * self.count
        return self.count + 4 * chunk_count(self.count)


@dataclass(frozen=True)
class SpecSummary:
    name: str
    input_shape: Shape
    num_classes: int
    layers: int
    parameters: tuple[Parameter, ...]

    @property
    def count(self) -> int:
        """Float parameters, in all."""
        return sum(p.count for p in self.parameters)

    def data_bytes(self, encoding: Encoding) -> int:
        """The weights' values in `encoding`, without the safetensors header."""
        return sum(p.data_bytes(encoding) for p in self.parameters)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "layers": self.layers,
            "parameters": [{"name": p.name, "shape": list(p.shape), "count": p.count} for p in self.parameters],
            "count": self.count,
            "bytes": {e: self.data_bytes(e) for e in ENCODINGS},
        }


def summarize(spec: ModelSpec) -> SpecSummary:
    """The summary of a spec that loaded (and so validated and fits together)."""
    shapes = spec.wire_shapes()
    parameters = tuple(Parameter(name, shape) for name, shape in shapes.items())
    return SpecSummary(spec.name, spec.input_shape, spec.num_classes, len(spec.layers), parameters)
