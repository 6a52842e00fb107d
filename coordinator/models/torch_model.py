"""Build a PyTorch module from a model spec; its state_dict keys are the wire names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from coordinator.models.spec import ModelSpec


class SpecModel(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.layers = nn.Sequential(*(_layer(layer) for layer in spec.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.reshape(x.shape[0], *self.spec.input_shape))  # type: ignore[no-any-return]


def _layer(layer: dict[str, Any]) -> nn.Module:
    kind = layer["type"]
    if kind == "flatten":
        return nn.Flatten()
    if kind == "relu":
        return nn.ReLU()
    if kind == "linear":
        return nn.Linear(layer["in_features"], layer["out_features"], bias=layer.get("bias", True))
    if kind == "conv2d":
        return nn.Conv2d(
            layer["in_channels"],
            layer["out_channels"],
            layer["kernel_size"],
            stride=layer.get("stride", 1),
            padding=layer.get("padding", 0),
            bias=layer.get("bias", True),
        )
    if kind == "maxpool2d":
        return nn.MaxPool2d(layer["kernel_size"], stride=layer.get("stride"))
    if kind == "batchnorm2d":
        return nn.BatchNorm2d(layer["num_features"], eps=layer.get("eps", 1e-5), momentum=layer.get("momentum", 0.1))
    if kind == "dropout":
        return nn.Dropout(layer["p"])
    raise ValueError(f"unknown layer type {kind!r}")


def build_module(spec: ModelSpec, seed: int | None = None) -> SpecModel:
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return SpecModel(spec)
    return SpecModel(spec)


def wire_weights(module: nn.Module) -> dict[str, np.ndarray]:
    """The float state as numpy arrays, named as on the wire."""
    return {
        name: t.detach().cpu().numpy().astype(np.float32, copy=True)
        for name, t in module.state_dict().items()
        if t.is_floating_point()
    }


def load_wire_weights(module: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    state = {name: torch.from_numpy(np.array(w, dtype=np.float32)) for name, w in weights.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    # BatchNorm's num_batches_tracked is local bookkeeping and never travels.
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"weights do not fit the model: missing {missing}, unexpected {unexpected}")
