"""Regenerate `vectors/specs.json`: model specs every implementation must accept with these
parameter names and shapes, or refuse.

Expected parameters come from PyTorch itself (the float tensors of the built module's
`state_dict`, in order), not from either spec walker, so the vectors test the walkers.
Expected messages of shape errors are written out below; schema errors carry none, because
each implementation words those its own way. Run from the repo root:
    .venv/bin/python protocol/tools/make_spec_vectors.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coordinator.models.spec import BUILTIN_MODELS, spec_from_dict
from coordinator.models.torch_model import build_module

PROTOCOL = Path(__file__).resolve().parents[1]
OUT = PROTOCOL / "vectors" / "specs.json"

Spec = dict[str, Any]


def spec(name: str, input_shape: list[int], num_classes: int, *layers: dict[str, Any]) -> Spec:
    return {"name": name, "input_shape": input_shape, "num_classes": num_classes, "layers": list(layers)}


def linear(i: int, o: int, **extra: Any) -> dict[str, Any]:
    return {"type": "linear", "in_features": i, "out_features": o, **extra}


def conv(i: int, o: int, k: int, **extra: Any) -> dict[str, Any]:
    return {"type": "conv2d", "in_channels": i, "out_channels": o, "kernel_size": k, **extra}


FLATTEN, RELU = {"type": "flatten"}, {"type": "relu"}

EDGE_CASES = [
    spec("no-bias-linear", [4], 3, linear(4, 3, bias=False)),
    # 9 + 2·1 − 3 = 8, / 2 + 1 = 5: a [5, 5, 5] output.
    spec("conv-stride-padding", [3, 9, 9], 4, conv(3, 5, 3, stride=2, padding=1), RELU, FLATTEN, linear(125, 4)),
    # (7 − 3) / 2 + 1 = 3: a [2, 3, 3] output.
    spec("maxpool-stride", [2, 7, 7], 3, {"type": "maxpool2d", "kernel_size": 3, "stride": 2}, FLATTEN, linear(18, 3)),
    spec("batchnorm2d", [3, 4, 4], 2, {"type": "batchnorm2d", "num_features": 3}, FLATTEN, linear(48, 2)),
    spec("dropout", [6], 2, linear(6, 5), RELU, {"type": "dropout", "p": 0.3}, linear(5, 2)),
]

INVALID: list[dict[str, Any]] = [
    {
        "name": "linear-in-features-mismatch",
        "spec": spec("bad", [1, 28, 28], 10, FLATTEN, linear(700, 10)),
        "kind": "shape",
        "message": "layer 1 with input shape [784]: linear expects a flat input of 700",
    },
    {
        "name": "conv-in-channels-mismatch",
        "spec": spec("bad", [1, 28, 28], 10, conv(3, 4, 3), FLATTEN, linear(2704, 10)),
        "kind": "shape",
        "message": "layer 0 with input shape [1, 28, 28]: conv2d expects [3, H, W]",
    },
    {
        "name": "conv-on-flat-input",
        "spec": spec("bad", [784], 10, conv(1, 4, 3), FLATTEN, linear(2704, 10)),
        "kind": "shape",
        "message": "layer 0 with input shape [784]: conv2d expects [1, H, W]",
    },
    {
        "name": "kernel-does-not-fit",
        "spec": spec("bad", [1, 4, 4], 2, conv(1, 2, 7, padding=1), FLATTEN, linear(2, 2)),
        "kind": "shape",
        "message": "layer 0 with input shape [1, 4, 4]: conv2d kernel 7 does not fit",
    },
    {
        "name": "maxpool-too-large",
        "spec": spec("bad", [2, 3, 3], 2, {"type": "maxpool2d", "kernel_size": 4}, FLATTEN, linear(2, 2)),
        "kind": "shape",
        "message": "layer 0 with input shape [2, 3, 3]: maxpool2d expects [C, H, W] with H, W >= 4",
    },
    {
        "name": "batchnorm-num-features-mismatch",
        "spec": spec("bad", [3, 4, 4], 2, {"type": "batchnorm2d", "num_features": 2}, FLATTEN, linear(48, 2)),
        "kind": "shape",
        "message": "layer 0 with input shape [3, 4, 4]: batchnorm2d expects [2, H, W]",
    },
    {
        "name": "final-shape-not-num-classes",
        "spec": spec("short", [4], 3, linear(4, 5)),
        "kind": "shape",
        "message": 'model "short" ends with shape [5], expected [3]',
    },
    {"name": "unknown-layer-type", "spec": spec("bad", [4], 2, {"type": "lstm"}), "kind": "schema"},
    {
        "name": "missing-required-field",
        "spec": spec("bad", [4], 2, {"type": "linear", "in_features": 4}),
        "kind": "schema",
    },
    {
        "name": "unknown-field",
        "spec": spec("bad", [4], 2, linear(4, 2), {"type": "relu", "inplace": True}),
        "kind": "schema",
    },
    {
        "name": "conv-stride-zero",
        "spec": spec("bad", [1, 4, 4], 2, conv(1, 2, 3, stride=0), FLATTEN, linear(8, 2)),
        "kind": "schema",
    },
]


def parameters(raw: Spec) -> list[dict[str, Any]]:
    module = build_module(spec_from_dict(raw))
    return [{"name": name, "shape": list(t.shape)} for name, t in module.state_dict().items() if t.is_floating_point()]


def main() -> None:
    builtins = [json.loads((PROTOCOL / "models" / f"{name}.json").read_text()) for name in BUILTIN_MODELS]
    valid = [{"name": raw["name"], "spec": raw, "parameters": parameters(raw)} for raw in builtins + EDGE_CASES]
    OUT.write_text(json.dumps({"valid": valid, "invalid": INVALID}, indent=1) + "\n")
    print(f"wrote {OUT}: {len(valid)} valid, {len(INVALID)} invalid")


if __name__ == "__main__":
    main()
