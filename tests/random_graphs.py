"""Graph specs of random sizes, for the trainers' parity tests: residual conv blocks,
transformer encoders and concatenated branches, each drawn from a seeded generator so a run
is reproducible and a failure names its spec."""

from __future__ import annotations

from typing import Any

import numpy as np

Spec = dict[str, Any]


def _residual_conv(rng: np.random.Generator, name: str) -> Spec:
    c, h, k = int(rng.integers(2, 6)), int(rng.integers(6, 11)), int(rng.choice([1, 3, 5]))
    conv = {"type": "conv2d", "in_channels": c, "out_channels": c, "kernel_size": k, "padding": k // 2}
    return {"name": name, "input_shape": [c, h, h], "num_classes": 3, "layers": [
        conv, {"type": "batchnorm2d", "num_features": c}, {"type": "relu"}, {**conv, "name": "b"},
        {"type": "add", "inputs": ["input", "b"]}, {"type": "avgpool2d", "kernel_size": 2}, {"type": "flatten"},
        {"type": "linear", "in_features": c * (h // 2) ** 2, "out_features": 3},
    ]}  # fmt: skip


def _transformer(rng: np.random.Generator, name: str) -> Spec:
    t, heads = int(rng.integers(3, 9)), int(rng.integers(1, 4))
    d, ff = heads * int(rng.integers(2, 5)), int(rng.integers(4, 25))
    first = bool(rng.integers(2))
    encoder = {"type": "transformer_encoder_layer", "d_model": d, "nhead": heads, "dim_feedforward": ff,
               "dropout": 0.0, "norm_first": first, "activation": str(rng.choice(["relu", "gelu"]))}  # fmt: skip
    return {"name": name, "input_shape": [t, d], "num_classes": 4, "layers": [
        {"type": "positional_embedding", "shape": [t, d]}, encoder, {**encoder, "norm_first": not first},
        {"type": "mean", "dim": [1]}, {"type": "linear", "in_features": d, "out_features": 4},
    ]}  # fmt: skip


def _branches(rng: np.random.Generator, name: str) -> Spec:
    n, a, b = (int(v) for v in rng.integers(3, 12, size=3))
    return {"name": name, "input_shape": [n], "num_classes": 2, "layers": [
        {"type": "linear", "in_features": n, "out_features": a, "name": "left"},
        {"type": "linear", "in_features": n, "out_features": b, "inputs": ["input"], "name": "right"},
        {"type": "concat", "dim": 1, "inputs": ["left", "right"]}, {"type": "layernorm", "normalized_shape": [a + b]},
        {"type": "gelu", "approximate": str(rng.choice(["none", "tanh"]))},
        {"type": "linear", "in_features": a + b, "out_features": 2},
    ]}  # fmt: skip


def random_graphs(count: int, seed: int = 13) -> list[Spec]:
    """`count` specs, cycling through the three families."""
    rng = np.random.default_rng(seed)
    families = (_residual_conv, _transformer, _branches)
    return [families[i % 3](rng, f"random{i}") for i in range(count)]
