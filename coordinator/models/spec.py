"""The JSON model spec: loading, validation and shape inference, without torch.

Parameter names follow PyTorch's `state_dict` of `torch_model.build_module`: each layer's
`module` path (`layers.<index>` unless the spec names one) and the parameter's own name. Only
float tensors travel on the wire, so BatchNorm's integer `num_batches_tracked` is not part of
`wire_shapes`. `graph` reads the layers; `layer_types` knows each kind of layer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.models.graph import Node, parse_nodes, walk
from coordinator.models.layer_types import Shape
from coordinator.protocol.schema import validate_model_spec
from coordinator.resources import protocol_dir

BUILTIN_MODELS = ("mnist-mlp", "mnist-2nn", "mnist-cnn", "mnist-cnn-bn", "mnist-vit")


@dataclass(frozen=True)
class ModelSpec:
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def input_shape(self) -> Shape:
        return tuple(self.raw["input_shape"])

    @property
    def num_classes(self) -> int:
        return int(self.raw["num_classes"])

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.raw["layers"])

    @property
    def input_dtype(self) -> str:
        """`float32`, or `int64` for token ids that an embedding takes."""
        return str(self.raw.get("input_dtype", "float32"))

    @property
    def loss(self) -> dict[str, Any]:
        """The training loss: `{"type": "cross_entropy", "label_smoothing": 0.0}` unless the spec says."""
        loss = dict(self.raw.get("loss", {"type": "cross_entropy"}))
        if loss["type"] == "cross_entropy":
            loss.setdefault("label_smoothing", 0.0)
        return loss

    def nodes(self) -> list[Node]:
        return parse_nodes(self.layers)

    def wire_shapes(self) -> dict[str, Shape]:
        return infer_shapes(self)

    def num_parameters(self) -> int:
        return sum(math.prod(s) for s in self.wire_shapes().values())


def load_spec(name_or_path: str | Path) -> ModelSpec:
    """A built-in model by name, or a spec file by path."""
    path = Path(name_or_path)
    if str(name_or_path) in BUILTIN_MODELS:
        path = protocol_dir() / "models" / f"{name_or_path}.json"
    elif not path.is_file():
        raise ValueError(f"unknown model {name_or_path!r}: not one of {', '.join(BUILTIN_MODELS)} and not a file")
    return spec_from_dict(json.loads(path.read_text()))


def spec_from_dict(raw: Any) -> ModelSpec:
    validate_model_spec(raw)
    spec = ModelSpec(raw)
    infer_shapes(spec)
    return spec


def infer_shapes(spec: ModelSpec) -> dict[str, Shape]:
    """Walk the layers, checking each fits its input; return the float tensors' shapes in order."""
    found = walk(spec.nodes(), spec.input_shape, spec.input_dtype == "int64")
    shape = found.outputs[-1]
    if shape != (spec.num_classes,):
        raise ValueError(f'model "{spec.name}" ends with shape {list(shape)}, expected [{spec.num_classes}]')
    if spec.loss["type"] == "cross_entropy" and spec.num_classes < 2:
        raise ValueError(f'model "{spec.name}": cross_entropy needs at least 2 classes')
    if spec.loss["type"] == "mse" and spec.num_classes != 1:
        raise ValueError(f'model "{spec.name}": mse regresses one target per example, so num_classes must be 1')
    return found.params
