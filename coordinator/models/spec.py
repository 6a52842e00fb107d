"""The JSON layer spec: loading, validation and shape inference, without torch.

Parameter names follow PyTorch's `state_dict` of `torch_model.build_module`:
`layers.<index>.<name>`. Only float tensors travel on the wire, so BatchNorm's
integer `num_batches_tracked` is not part of `wire_shapes`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.protocol.schema import validate_model_spec
from coordinator.resources import protocol_dir

BUILTIN_MODELS = ("mnist-mlp", "mnist-2nn", "mnist-cnn", "mnist-cnn-bn")

Shape = tuple[int, ...]


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
    """Walk the layers, checking each fits its input; return the float tensors' shapes."""
    shape: Shape = spec.input_shape
    params: dict[str, Shape] = {}
    for i, layer in enumerate(spec.layers):
        prefix = f"layers.{i}"
        kind = layer["type"]
        where = f"layer {i} with input shape {list(shape)}"
        if kind == "flatten":
            shape = (math.prod(shape),)
        elif kind == "linear":
            if shape != (layer["in_features"],):
                raise ValueError(f"{where}: linear expects a flat input of {layer['in_features']}")
            params[f"{prefix}.weight"] = (layer["out_features"], layer["in_features"])
            if layer.get("bias", True):
                params[f"{prefix}.bias"] = (layer["out_features"],)
            shape = (layer["out_features"],)
        elif kind == "conv2d":
            if len(shape) != 3 or shape[0] != layer["in_channels"]:
                raise ValueError(f"{where}: conv2d expects [{layer['in_channels']}, H, W]")
            k, s, p = layer["kernel_size"], layer.get("stride", 1), layer.get("padding", 0)
            h, w = (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1
            if h < 1 or w < 1:
                raise ValueError(f"{where}: conv2d kernel {k} does not fit")
            params[f"{prefix}.weight"] = (layer["out_channels"], layer["in_channels"], k, k)
            if layer.get("bias", True):
                params[f"{prefix}.bias"] = (layer["out_channels"],)
            shape = (layer["out_channels"], h, w)
        elif kind == "maxpool2d":
            k = layer["kernel_size"]
            s = layer.get("stride", k)
            if len(shape) != 3 or shape[1] < k or shape[2] < k:
                raise ValueError(f"{where}: maxpool2d expects [C, H, W] with H, W >= {k}")
            shape = (shape[0], (shape[1] - k) // s + 1, (shape[2] - k) // s + 1)
        elif kind == "batchnorm2d":
            n = layer["num_features"]
            if len(shape) != 3 or shape[0] != n:
                raise ValueError(f"{where}: batchnorm2d expects [{n}, H, W]")
            for name in ("weight", "bias", "running_mean", "running_var"):
                params[f"{prefix}.{name}"] = (n,)
        # relu and dropout keep the shape.
    if shape != (spec.num_classes,):
        raise ValueError(f'model "{spec.name}" ends with shape {list(shape)}, expected [{spec.num_classes}]')
    return params
