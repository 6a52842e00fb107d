"""Regenerate `vectors/graph-specs.json`: graph specs (named inputs, module paths, every layer
type and loss) that an implementation must accept with these parameter names and shapes, or
refuse with these messages.

Expected parameters come from PyTorch (the built module's float `state_dict`, in order), and
expected layer outputs from running it, not from the spec walker, so the vectors test the
walker. Run from the repo root:
    PYTHONPATH=. .venv/bin/python protocol/tools/make_graph_vectors.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from coordinator.models.spec import spec_from_dict
from coordinator.models.torch_model import build_module

OUT = Path(__file__).resolve().parents[1] / "vectors" / "graph-specs.json"

Spec = dict[str, Any]


def spec(name: str, input_shape: list[int], num_classes: int, *layers: Spec, **top: Any) -> Spec:
    return {"name": name, "input_shape": input_shape, "num_classes": num_classes, "layers": list(layers), **top}


def layer(kind: str, **attrs: Any) -> Spec:
    return {"type": kind, **attrs}


def encoder(d: int, heads: int, ff: int, **attrs: Any) -> Spec:
    return layer("transformer_encoder_layer", d_model=d, nhead=heads, dim_feedforward=ff, dropout=0.0, **attrs)


VALID = [
    spec("residual-mlp", [12], 3,
         layer("linear", in_features=12, out_features=16, name="stem"),
         layer("layernorm", normalized_shape=[16]), layer("gelu", approximate="tanh"),
         layer("linear", in_features=16, out_features=16), layer("dropout", p=0.1, name="branch"),
         layer("add", inputs=["stem", "branch"]), layer("tanh"), layer("sigmoid"),
         layer("leaky_relu", negative_slope=0.2), layer("linear", in_features=16, out_features=3),
         layer("log_softmax", dim=1)),
    spec("resnet-block", [3, 12, 12], 4,
         layer("conv2d", in_channels=3, out_channels=8, kernel_size=[3, 3], padding=1, module="stem.conv", name="stem"),
         layer("batchnorm2d", num_features=8, module="stem.bn"), layer("relu"),
         layer("conv2d", in_channels=8, out_channels=8, kernel_size=3, padding=[1, 1], bias=False, module="block.conv"),
         layer("batchnorm2d", num_features=8, module="block.bn", name="bn"),
         layer("add", inputs=["bn", "stem"]), layer("maxpool2d", kernel_size=3, stride=2, padding=1),
         layer("avgpool2d", kernel_size=2), layer("adaptive_avgpool2d", output_size=[2, 1]),
         layer("flatten"), layer("linear", in_features=16, out_features=4, module="fc")),
    spec("conv1d-two-branches", [3, 20], 5,
         layer("conv1d", in_channels=3, out_channels=6, kernel_size=5, stride=2, padding=2, name="c"),
         layer("batchnorm1d", num_features=6), layer("maxpool1d", kernel_size=2, name="left"),
         layer("avgpool1d", kernel_size=3, stride=2, padding=1, inputs=["c"], name="right"),
         layer("concat", dim=1, inputs=["left", "right"]), layer("adaptive_avgpool1d", output_size=4),
         layer("flatten"), layer("batchnorm1d", num_features=48), layer("linear", in_features=48, out_features=5),
         layer("softmax", dim=-1)),
    spec("tiny-vit", [1, 12, 12], 10,
         layer("conv2d", in_channels=1, out_channels=16, kernel_size=4, stride=4, module="patch_embed"),
         layer("flatten", start_dim=2), layer("permute", dims=[0, 2, 1]),
         layer("positional_embedding", shape=[1, 9, 16], module="pos_embedding"),
         encoder(16, 4, 32, activation="gelu", norm_first=True, module="encoder.layers.0"),
         encoder(16, 2, 24, module="encoder.layers.1"),
         layer("layernorm", normalized_shape=[16], module="norm"), layer("mean", dim=[1]),
         layer("linear", in_features=16, out_features=10, module="head")),
    spec("text-classifier", [7], 2,
         layer("embedding", num_embeddings=50, embedding_dim=8, module="tok"),
         layer("positional_embedding", shape=[7, 8], module="pos"),
         encoder(8, 2, 16, layer_norm_eps=1e-6), layer("mean", dim=[-2], keepdim=True), layer("reshape", shape=[-1]),
         layer("linear", in_features=8, out_features=2, module="cls"),
         input_dtype="int64", loss={"type": "cross_entropy", "label_smoothing": 0.1}),
    spec("regression", [2, 3], 1, layer("reshape", shape=[6]), layer("linear", in_features=6, out_features=4),
         layer("relu"), layer("linear", in_features=4, out_features=1), loss={"type": "mse"}),
    spec("multilabel-parameter-first", [6], 3,
         layer("linear", in_features=6, out_features=3, module="body.fc"),
         layer("positional_embedding", shape=[3], module="offset"), loss={"type": "bce_with_logits"}),
]  # fmt: skip

INVALID: list[tuple[str, Spec, str]] = [
    ("unknown-input", spec("bad", [4], 2, layer("linear", in_features=4, out_features=2, inputs=["x"])),
     'layer 0 takes "x", which no earlier layer is named'),
    ("self-reference", spec("bad", [2], 2, layer("add", name="a", inputs=["input", "a"])),
     'layer 0 takes "a", which no earlier layer is named'),
    ("duplicate-name", spec("bad", [4], 2, layer("relu", name="a"), layer("linear", in_features=4, out_features=2,
                                                                            name="a")),
     'layer 1 is named "a", which names layer 0 already'),
    ("name-input-reserved", spec("bad", [2], 2, layer("relu", name="input")),
     'layer 0 is named "input", which names the model\'s input already'),
    ("unused-layer", spec("bad", [4], 2, layer("relu"), layer("linear", in_features=4, out_features=2,
                                                              inputs=["input"])),
     "layer 0's output is never used: only the last layer's is the model's"),
    ("add-of-one", spec("bad", [2], 2, layer("add")), "layer 0: add takes two or more inputs"),
    ("module-clash", spec("bad", [4], 2, layer("linear", in_features=4, out_features=4, module="a.b"),
                          layer("linear", in_features=4, out_features=2, module="a")),
     'layer 1 puts its parameters at "a", which clashes with layer 0 at "a.b"'),
    ("add-shapes", spec("bad", [4], 2, layer("linear", in_features=4, out_features=3, name="a"),
                        layer("add", inputs=["a", "input"])),
     'layer 1 with input shapes [3] and [4]: add cannot broadcast [3] and [4]'),
    ("concat-sizes", spec("bad", [2, 4], 2, layer("reshape", shape=[4, 2], name="r"),
                          layer("concat", dim=1, inputs=["r", "input"])),
     "layer 1 with input shapes [4, 2] and [2, 4]: concat along dim 1 expects equal sizes elsewhere"),
    ("permute-batch", spec("bad", [2, 3], 2, layer("permute", dims=[1, 0, 2])),
     "layer 0 with input shape [2, 3]: permute's dims [1, 0, 2] must reorder 0..2 and keep the batch (0) first"),
    ("reshape-count", spec("bad", [2, 3], 2, layer("reshape", shape=[4, -1])),
     "layer 0 with input shape [2, 3]: reshape cannot make [4, -1] of 6 values"),
    ("flatten-batch", spec("bad", [2, 3], 2, layer("flatten", start_dim=0)),
     "layer 0 with input shape [2, 3]: dim 0 is the batch: a layer may not mix examples"),
    ("softmax-dim", spec("bad", [2], 2, layer("softmax", dim=2)),
     "layer 0 with input shape [2]: dim 2 is out of range for 2 dims"),
    ("embedding-of-floats", spec("bad", [3], 2, layer("embedding", num_embeddings=5, embedding_dim=2)),
     "layer 0 with input shape [3]: embedding expects integer ids (input_dtype int64)"),
    ("embedding-of-a-grid", spec("bad", [2, 3], 2, layer("embedding", num_embeddings=5, embedding_dim=2),
                                 input_dtype="int64"),
     "layer 0 with input shape [2, 3]: embedding expects [T] ids"),
    ("relu-of-ids", spec("bad", [2], 2, layer("relu"), input_dtype="int64"),
     "layer 0 with input shape [2]: relu expects floats, not the ids an embedding takes"),
    ("encoder-width", spec("bad", [3, 8], 2, encoder(6, 2, 8)),
     "layer 0 with input shape [3, 8]: transformer_encoder_layer expects [T, 6] (batch first)"),
    ("encoder-heads", spec("bad", [3, 8], 2, encoder(8, 3, 8)),
     "layer 0 with input shape [3, 8]: transformer_encoder_layer's d_model 8 is not a multiple of nhead 3"),
    ("positional-shape", spec("bad", [3, 8], 2, layer("positional_embedding", shape=[4, 8])),
     "layer 0 with input shape [3, 8]: positional_embedding of shape [4, 8] does not broadcast to [3, 8]"),
    ("layernorm-shape", spec("bad", [3, 8], 2, layer("layernorm", normalized_shape=[3])),
     "layer 0 with input shape [3, 8]: layernorm expects [..., 3]"),
    ("one-class-cross-entropy", spec("bad", [3], 1, layer("linear", in_features=3, out_features=1)),
     'model "bad": cross_entropy needs at least 2 classes'),
    ("too-many-dims", spec("bad", [2, 3], 2, layer("reshape", shape=[1, 1, 1, 2, 3])),
     "layer 0 with input shape [2, 3]: reshape would make 5 dims per example; models keep 1 to 4"),
    ("mean-to-a-scalar", spec("bad", [3], 2, layer("mean", dim=[1])),
     "layer 0 with input shape [3]: mean would make 0 dims per example; models keep 1 to 4"),
    ("mse-of-two", spec("bad", [3], 2, layer("linear", in_features=3, out_features=2), loss={"type": "mse"}),
     'model "bad": mse regresses one target per example, so num_classes must be 1'),
    ("pool-padding", spec("bad", [1, 8, 8], 2, layer("maxpool2d", kernel_size=2, padding=2)),
     "layer 0 with input shape [1, 8, 8]: maxpool2d padding may be at most half the kernel"),
]  # fmt: skip


def expected(raw: Spec) -> dict[str, Any]:
    module = build_module(spec_from_dict(raw), seed=0).eval()
    x = torch.randint(0, 5, (2, *raw["input_shape"])) if raw.get("input_dtype") == "int64" else None
    outputs = module.outputs(torch.randn(2, *raw["input_shape"]) if x is None else x)
    return {
        "name": raw["name"],
        "spec": raw,
        "parameters": [{"name": n, "shape": list(t.shape)} for n, t in module.state_dict().items()
                       if t.is_floating_point()],
        "outputs": [list(o.shape[1:]) for o in outputs],
    }  # fmt: skip


def main() -> None:
    valid = [expected(raw) for raw in VALID]
    invalid = [{"name": n, "spec": s, "kind": "shape", "message": m} for n, s, m in INVALID]
    OUT.write_text(json.dumps({"valid": valid, "invalid": invalid}, indent=1) + "\n")
    print(f"wrote {OUT}: {len(valid)} valid, {len(invalid)} invalid")


if __name__ == "__main__":
    main()
