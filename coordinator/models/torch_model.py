"""Build a PyTorch module from a model spec; its state_dict keys are the wire names.

A layer with parameters is PyTorch's own module (`nn.Linear`, `nn.TransformerEncoderLayer`, …)
registered at the layer's `module` path, so semantics and `state_dict` names are PyTorch's by
construction. Layers without parameters run as `torch.nn.functional` calls and are not
registered: their default paths could otherwise collide with a user's own module names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from coordinator.models.graph import Node
from coordinator.models.layer_types import pair
from coordinator.models.spec import ModelSpec

Op = Callable[[list[torch.Tensor], bool], torch.Tensor]


class SpecModel(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self._nodes = spec.nodes()
        self._ops: list[Op] = [self._op(node) for node in self._nodes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x)[-1]

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output for inputs `x` `[N, ...]`, in spec order."""
        x = x.reshape(x.shape[0], *self.spec.input_shape)
        if self.spec.input_dtype == "int64":
            x = x.long()
        outputs: list[torch.Tensor] = []
        for node, op in zip(self._nodes, self._ops, strict=True):
            outputs.append(op([x if j < 0 else outputs[j] for j in node.inputs], self.training))
        return outputs

    def _op(self, node: Node) -> Op:
        made = _module(node)
        if made is None:
            return _function(node)
        *parents, leaf = node.module.split(".")
        owner: nn.Module = self
        for part in parents:
            if part not in owner._modules:
                owner.add_module(part, nn.Module())
            owner = owner._modules[part]  # type: ignore[assignment]
        try:
            if isinstance(made, nn.Parameter):
                owner.register_parameter(leaf, made)
            else:
                owner.add_module(leaf, made)
        except KeyError as e:
            raise ValueError(f'layer {node.index}: module path "{node.module}" cannot be used: {e}') from None
        if isinstance(made, nn.Parameter):
            return lambda xs, training: xs[0] + made
        return lambda xs, training: made(xs[0])


def _module(node: Node) -> nn.Module | nn.Parameter | None:
    a, kind = node.attrs, node.type
    if kind == "linear":
        return nn.Linear(a["in_features"], a["out_features"], bias=a["bias"])
    if kind in ("conv1d", "conv2d"):
        conv = nn.Conv1d if kind == "conv1d" else nn.Conv2d
        n = 1 if kind == "conv1d" else 2
        k, s, p = (pair(a[f])[:n] for f in ("kernel_size", "stride", "padding"))
        return conv(a["in_channels"], a["out_channels"], k, stride=s, padding=p, bias=a["bias"])  # type: ignore[arg-type]
    if kind in ("batchnorm1d", "batchnorm2d"):
        norm = nn.BatchNorm1d if kind == "batchnorm1d" else nn.BatchNorm2d
        return norm(a["num_features"], eps=a["eps"], momentum=a["momentum"])
    if kind == "layernorm":
        shape = a["normalized_shape"]
        return nn.LayerNorm(shape, eps=a["eps"], elementwise_affine=a["elementwise_affine"], bias=a["bias"])
    if kind == "embedding":
        return nn.Embedding(a["num_embeddings"], a["embedding_dim"])
    if kind == "transformer_encoder_layer":
        return nn.TransformerEncoderLayer(
            a["d_model"], a["nhead"], a["dim_feedforward"], a["dropout"], activation=a["activation"],
            layer_norm_eps=a["layer_norm_eps"], batch_first=True, norm_first=a["norm_first"],
        )  # fmt: skip
    if kind == "positional_embedding":
        # ViT's initialisation: small, so early rounds are not dominated by position.
        return nn.Parameter(torch.randn(a["shape"]) * 0.02)
    return None


def _pool(node: Node, n: int) -> Op:
    a = node.attrs
    k = pair(a["kernel_size"])[:n]
    s = k if a["stride"] is None else pair(a["stride"])[:n]
    p = pair(a["padding"])[:n]
    pool: Any = getattr(functional, f"{node.type[:3]}_pool{n}d")
    return lambda xs, training: pool(xs[0], k, s, p)


def _function(node: Node) -> Op:
    a, kind = node.attrs, node.type
    simple: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "relu": functional.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "gelu": lambda x: functional.gelu(x, approximate=a["approximate"]),
        "leaky_relu": lambda x: functional.leaky_relu(x, a["negative_slope"]),
        "softmax": lambda x: functional.softmax(x, a["dim"]),
        "log_softmax": lambda x: functional.log_softmax(x, a["dim"]),
        "flatten": lambda x: torch.flatten(x, a["start_dim"], a["end_dim"]),
        "reshape": lambda x: x.reshape(x.shape[0], *a["shape"]),
        "permute": lambda x: x.permute(*a["dims"]),
        "mean": lambda x: x.mean(dim=a["dim"], keepdim=a["keepdim"]),
        "adaptive_avgpool1d": lambda x: functional.adaptive_avg_pool1d(x, pair(a["output_size"])[0]),
        "adaptive_avgpool2d": lambda x: functional.adaptive_avg_pool2d(x, pair(a["output_size"])),
    }
    if kind in simple:
        f = simple[kind]
        return lambda xs, training: f(xs[0])
    if kind == "dropout":
        return lambda xs, training: functional.dropout(xs[0], a["p"], training)
    if kind in ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"):
        return _pool(node, int(kind[-2]))
    if kind == "add":
        return lambda xs, training: _sum(xs)
    if kind == "concat":
        return lambda xs, training: torch.cat(xs, dim=a["dim"])
    raise ValueError(f"unknown layer type {kind!r}")


def _sum(xs: list[torch.Tensor]) -> torch.Tensor:
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total


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
