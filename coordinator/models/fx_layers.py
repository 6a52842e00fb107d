"""Which PyTorch modules and functions are which spec layers, for `from_torch`.

Each mapping reads the module's or call's settings and either returns the equivalent layers or
raises `Unsupported` naming the setting that has no equivalent (a dilation, `ceil_mode`, a
`padding_idx`), so nothing is dropped silently.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional

Layer = dict[str, Any]


class Unsupported(ValueError):
    """Something in the user's model has no spec equivalent; the message names it."""


def _size(v: Any) -> int | list[int]:
    """An int, or a tuple written as an int when its entries agree."""
    if isinstance(v, int):
        return v
    values = [int(x) for x in v]
    return values[0] if len(set(values)) == 1 else values


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise Unsupported(what)


def _conv(m: nn.Conv1d | nn.Conv2d, kind: str) -> Layer:
    _require(m.groups == 1, f"{kind} with groups={m.groups}")
    _require(set(m.dilation) == {1}, f"{kind} with dilation={m.dilation}")
    _require(m.padding_mode == "zeros", f"{kind} with padding_mode={m.padding_mode!r}")
    _require(not isinstance(m.padding, str) or m.padding == "valid", f"{kind} with padding={m.padding!r}")
    padding = 0 if isinstance(m.padding, str) else _size(m.padding)
    return {"type": kind, "in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel_size": _size(m.kernel_size), "stride": _size(m.stride), "padding": padding,
            "bias": m.bias is not None}  # fmt: skip


def _pool(m: Any, kind: str) -> Layer:
    _require(not getattr(m, "ceil_mode", False), f"{kind} with ceil_mode=True")
    _require(getattr(m, "dilation", 1) in (1, (1,), (1, 1)), f"{kind} with dilation={getattr(m, 'dilation', 1)}")
    _require(not getattr(m, "return_indices", False), f"{kind} with return_indices=True")
    _require(getattr(m, "count_include_pad", True), f"{kind} with count_include_pad=False")
    _require(getattr(m, "divisor_override", None) is None, f"{kind} with divisor_override")
    return {"type": kind, "kernel_size": _size(m.kernel_size), "stride": _size(m.stride or m.kernel_size),
            "padding": _size(m.padding)}  # fmt: skip


def _batchnorm(m: nn.BatchNorm1d | nn.BatchNorm2d, kind: str) -> Layer:
    _require(m.affine and m.track_running_stats, f"{kind} without affine parameters or running statistics")
    _require(m.momentum is not None, f"{kind} with momentum=None (a cumulative average)")
    return {"type": kind, "num_features": m.num_features, "eps": m.eps, "momentum": m.momentum}


def _encoder_layer(m: nn.TransformerEncoderLayer, path: str) -> Layer:
    attn = m.self_attn
    _require(m.self_attn.batch_first, "TransformerEncoderLayer without batch_first=True")
    _require(attn._qkv_same_embed_dim and attn.in_proj_bias is not None and m.linear1.bias is not None,
             "TransformerEncoderLayer without biases, or with kdim/vdim")  # fmt: skip
    act = {1: "relu", 2: "gelu"}.get(getattr(m, "activation_relu_or_gelu", 0))
    _require(act is not None, "TransformerEncoderLayer with an activation other than relu or gelu")
    return {"type": "transformer_encoder_layer", "d_model": attn.embed_dim, "nhead": attn.num_heads,
            "dim_feedforward": m.linear1.out_features, "dropout": m.dropout.p, "activation": act,
            "layer_norm_eps": m.norm1.eps, "norm_first": m.norm_first, "module": path}  # fmt: skip


def module_layers(m: nn.Module, path: str) -> list[Layer]:
    """The layers one call of submodule `m` (at `path`) stands for: none for `Identity`, one
    per layer (and a final norm) for a `TransformerEncoder`."""
    at = {"module": path}
    simple: dict[type[nn.Module], Callable[[Any], Layer]] = {
        nn.Linear: lambda m: {
            "type": "linear",
            "in_features": m.in_features,
            "out_features": m.out_features,
            "bias": m.bias is not None,
        },
        nn.Conv1d: lambda m: _conv(m, "conv1d"),
        nn.Conv2d: lambda m: _conv(m, "conv2d"),
        nn.MaxPool1d: lambda m: _pool(m, "maxpool1d"),
        nn.MaxPool2d: lambda m: _pool(m, "maxpool2d"),
        nn.AvgPool1d: lambda m: _pool(m, "avgpool1d"),
        nn.AvgPool2d: lambda m: _pool(m, "avgpool2d"),
        nn.AdaptiveAvgPool1d: lambda m: {"type": "adaptive_avgpool1d", "output_size": _size(m.output_size)},
        nn.AdaptiveAvgPool2d: lambda m: {"type": "adaptive_avgpool2d", "output_size": _size(m.output_size)},
        nn.BatchNorm1d: lambda m: _batchnorm(m, "batchnorm1d"),
        nn.BatchNorm2d: lambda m: _batchnorm(m, "batchnorm2d"),
        nn.LayerNorm: lambda m: {
            "type": "layernorm",
            "normalized_shape": list(m.normalized_shape),
            "eps": m.eps,
            "elementwise_affine": m.elementwise_affine,
            "bias": m.bias is not None,
        },
        nn.Dropout: lambda m: {"type": "dropout", "p": m.p},
        nn.ReLU: lambda m: {"type": "relu"},
        nn.GELU: lambda m: {"type": "gelu", "approximate": m.approximate},
        nn.Tanh: lambda m: {"type": "tanh"},
        nn.Sigmoid: lambda m: {"type": "sigmoid"},
        nn.LeakyReLU: lambda m: {"type": "leaky_relu", "negative_slope": m.negative_slope},
        nn.Softmax: lambda m: {"type": "softmax", "dim": dim_of(m.dim, "Softmax")},
        nn.LogSoftmax: lambda m: {"type": "log_softmax", "dim": dim_of(m.dim, "LogSoftmax")},
        nn.Flatten: lambda m: {"type": "flatten", "start_dim": m.start_dim, "end_dim": m.end_dim},
    }
    kind = type(m)
    if kind is nn.Identity:
        return []
    if kind is nn.Embedding:
        e: nn.Embedding = m  # type: ignore[assignment]
        _require(e.padding_idx is None and e.max_norm is None and not e.sparse and not e.scale_grad_by_freq,
                 "Embedding with padding_idx, max_norm, sparse or scale_grad_by_freq")  # fmt: skip
        return [{"type": "embedding", "num_embeddings": e.num_embeddings, "embedding_dim": e.embedding_dim, **at}]
    if kind is nn.TransformerEncoderLayer:
        return [_encoder_layer(m, path)]  # type: ignore[arg-type]
    if kind is nn.TransformerEncoder:
        layers = [_encoder_layer(sub, f"{path}.layers.{i}") for i, sub in enumerate(m.layers)]  # type: ignore[arg-type]
        norm = m.norm
        if norm is not None:
            layers += module_layers(norm, f"{path}.norm")  # type: ignore[arg-type]
        return layers
    if kind not in simple:
        raise Unsupported(f"{kind.__module__}.{kind.__qualname__}")
    layer = simple[kind](m)
    holds_state = any(True for _ in m.parameters()) or any(True for _ in m.buffers())
    return [{**layer, **at}] if holds_state else [layer]


def dim_of(dim: int | None, what: str) -> int:
    _require(dim is not None, f"{what} without dim")
    return int(dim)  # type: ignore[arg-type]


def arg(args: Sequence[Any], kwargs: dict[str, Any], i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


ADDS = (operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__iadd__")
UNARY: dict[Any, str] = {
    functional.relu: "relu", torch.relu: "relu", "relu": "relu",
    torch.tanh: "tanh", functional.tanh: "tanh", "tanh": "tanh",
    torch.sigmoid: "sigmoid", functional.sigmoid: "sigmoid", "sigmoid": "sigmoid",
}  # fmt: skip
SOFTMAX: dict[Any, str] = {functional.softmax: "softmax", torch.softmax: "softmax", "softmax": "softmax",
                           functional.log_softmax: "log_softmax", torch.log_softmax: "log_softmax",
                           "log_softmax": "log_softmax"}  # fmt: skip
POOLS: dict[Any, str] = {functional.max_pool1d: "maxpool1d", functional.max_pool2d: "maxpool2d",
                         functional.avg_pool1d: "avgpool1d", functional.avg_pool2d: "avgpool2d"}  # fmt: skip
ADAPTIVE: dict[Any, str] = {functional.adaptive_avg_pool1d: "adaptive_avgpool1d",
                            functional.adaptive_avg_pool2d: "adaptive_avgpool2d"}  # fmt: skip
PASS_THROUGH = ("contiguous", "clone")
