"""The model spec's JSON Schema, written out from the layer table so the two cannot drift.

`protocol/tools/make_model_schema.py` writes it to `protocol/schemas/model-spec.schema.json`,
which the coordinator, the page and the trainer's vectors read; a test checks the file is current.
"""

from __future__ import annotations

from typing import Any

from coordinator.models.layer_types import LAYER_TYPES, REQUIRED, Attr, LayerType

JSON_INT = 9007199254740991  # the largest integer a JavaScript number holds exactly
MAX_LAYERS = 256
NAME = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_.-]*$", "maxLength": 128}
PATH = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$", "maxLength": 256}


def _int(attr: Attr) -> dict[str, Any]:
    low = -JSON_INT if attr.minimum is None else attr.minimum
    return {"type": "integer", "minimum": low, "maximum": JSON_INT}


def _attr(attr: Attr) -> dict[str, Any]:
    if attr.kind == "int":
        return _int(attr)
    if attr.kind == "ints":
        return {"type": "array", "items": _int(attr), "minItems": 1, "maxItems": 8}
    if attr.kind == "pair":
        return {"oneOf": [_int(attr), {"type": "array", "items": _int(attr), "minItems": 2, "maxItems": 2}]}
    if attr.kind == "bool":
        return {"type": "boolean"}
    if attr.kind == "choice":
        return {"enum": list(attr.choices)}
    schema: dict[str, Any] = {"type": "number"}
    for key, value in (("minimum", attr.minimum), ("maximum", attr.maximum),
                       ("exclusiveMinimum", attr.above), ("exclusiveMaximum", attr.below)):  # fmt: skip
        if value is not None:
            schema[key] = value
    return schema


def _layer(kind: LayerType) -> dict[str, Any]:
    inputs = {"type": "array", "items": NAME, "minItems": 1 if kind.arity == 1 else 2, "maxItems": 16}
    if kind.arity == 1:
        inputs["maxItems"] = 1
    properties: dict[str, Any] = {"type": {"const": kind.name}, "name": NAME, "inputs": inputs, "module": PATH}
    properties.update({name: _attr(attr) for name, attr in kind.attrs.items()})
    required = ["type", *(n for n, a in kind.attrs.items() if a.default is REQUIRED)]
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}


def model_spec_schema() -> dict[str, Any]:
    loss = {
        "oneOf": [
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["type"],
                "properties": {
                    "type": {"const": "cross_entropy"},
                    "label_smoothing": {"type": "number", "minimum": 0, "maximum": 1},
                },
            },
            *(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["type"],
                    "properties": {"type": {"const": name}},
                }
                for name in ("mse", "bce_with_logits")
            ),
        ]
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "model-spec.schema.json",
        "title": "model-spec",
        "description": (
            "A model as a list of layers. A layer without inputs takes the previous layer's output, so a "
            "plain list is a chain; inputs name earlier layers or 'input'. The last layer's output is the "
            "model's. Parameters are PyTorch's state_dict names: <module>.<param>, module defaulting to "
            "layers.<index>. Generated from coordinator/models/layer_types.py."
        ),
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "input_shape", "num_classes", "layers"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 128},
            "input_shape": {"type": "array", "items": _int(Attr("int", minimum=1)), "minItems": 1, "maxItems": 3},
            "input_dtype": {"enum": ["float32", "int64"]},
            "num_classes": {"type": "integer", "minimum": 1, "maximum": JSON_INT},
            "loss": loss,
            "layers": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_LAYERS,
                "items": {"oneOf": [_layer(kind) for kind in LAYER_TYPES.values()]},
            },
        },
    }
