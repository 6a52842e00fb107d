"""The spec's layer types: each one's attributes, and how it maps input shapes to an output shape
and parameters. Pure Python, no torch: the schema, the coordinator's checks and `pollen model
check` all read this one table.

Shapes are per example, without the batch dimension. An attribute that names a dimension
(`dim`, `dims`, `start_dim`) counts as PyTorch does, with 0 the batch, so a spec reads like the
`forward` it was written from. Parameters are named relative to the layer's `module` path, as in
`state_dict`; a bare tensor (a positional embedding) has the empty name and is the path itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]
Params = list[tuple[str, Shape]]
Infer = Callable[[Mapping[str, Any], list[Shape]], tuple[Shape, Params]]

REQUIRED = object()


class ShapeError(ValueError):
    """A layer does not fit its input; the message says how, without saying which layer."""


@dataclass(frozen=True)
class Attr:
    """One attribute: `int`, `float`, `bool`, `ints` (a list), `pair` (an int or two), `choice`."""

    kind: str
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # an exclusive minimum
    below: float | None = None  # an exclusive maximum
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerType:
    name: str
    infer: Infer
    attrs: Mapping[str, Attr] = field(default_factory=dict)
    arity: int = 1  # 0: two or more inputs
    takes_ids: bool = False  # its input is integer ids, not floats


def pair(v: int | list[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[1])


def _show(shape: Shape) -> str:
    return str(list(shape))


def _axis(dim: int, rank: int) -> int:
    """A PyTorch dim of a batched tensor of per-example rank `rank`, as a per-example index."""
    full = rank + 1
    if not -full <= dim < full:
        raise ShapeError(f"dim {dim} is out of range for {full} dims")
    d = dim % full
    if d == 0:
        raise ShapeError("dim 0 is the batch: a layer may not mix examples")
    return d - 1


def _same(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
    return s[0], []


def _softmax(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
    _axis(a["dim"], len(s[0]))
    return s[0], []


def _flatten(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
    (x,) = s
    lo, hi = _axis(a["start_dim"], len(x)), _axis(a["end_dim"], len(x))
    if lo > hi:
        raise ShapeError(f"flatten's start_dim {a['start_dim']} is after its end_dim {a['end_dim']}")
    return (*x[:lo], math.prod(x[lo : hi + 1]), *x[hi + 1 :]), []


def _reshape(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
    (x,), want = s, list(a["shape"])
    if want.count(-1) > 1 or any(d < -1 or d == 0 for d in want):
        raise ShapeError(f"reshape's shape {want} may hold positive sizes and one -1")
    known = math.prod(d for d in want if d != -1)
    if -1 in want and math.prod(x) % known == 0:
        want[want.index(-1)] = math.prod(x) // known
    if math.prod(want) != math.prod(x) or -1 in want:
        raise ShapeError(f"reshape cannot make {list(a['shape'])} of {math.prod(x)} values")
    return tuple(want), []


def _permute(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
    (x,), dims = s, list(a["dims"])
    if sorted(dims) != list(range(len(x) + 1)) or dims[0] != 0:
        raise ShapeError(f"permute's dims {dims} must reorder 0..{len(x)} and keep the batch (0) first")
    return tuple(x[d - 1] for d in dims[1:]), []


def _linear(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
    (x,), i, o = s, a["in_features"], a["out_features"]
    if x[-1] != i:
        raise ShapeError(f"linear expects a flat input of {i}" if len(x) == 1 else f"linear expects [..., {i}]")
    params: Params = [("weight", (o, i))] + ([("bias", (o,))] if a["bias"] else [])
    return (*x[:-1], o), params


def _window(length: int, k: int, stride: int, pad: int) -> int:
    return (length + 2 * pad - k) // stride + 1


def _conv(dims: int) -> Infer:
    def infer(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
        (x,), c, o = s, a["in_channels"], a["out_channels"]
        ks, st, pd = (pair(a[n])[:dims] for n in ("kernel_size", "stride", "padding"))
        if len(x) != dims + 1 or x[0] != c:
            raise ShapeError(f"conv{dims}d expects [{c}, {'L' if dims == 1 else 'H, W'}]")
        if any(n + 2 * p < k for n, k, p in zip(x[1:], ks, pd, strict=True)):
            kernel = ks[0] if len(set(ks)) == 1 else list(ks)
            raise ShapeError(f"conv{dims}d kernel {kernel} does not fit")
        params: Params = [("weight", (o, c, *ks))] + ([("bias", (o,))] if a["bias"] else [])
        return (o, *(_window(n, k, t, p) for n, k, t, p in zip(x[1:], ks, st, pd, strict=True))), params

    return infer


def _pool(kind: str, dims: int) -> Infer:
    def infer(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
        (x,) = s
        ks = pair(a["kernel_size"])[:dims]
        st = ks if a["stride"] is None else pair(a["stride"])[:dims]
        pd = pair(a["padding"])[:dims]
        if any(2 * p > k for k, p in zip(ks, pd, strict=True)):
            raise ShapeError(f"{kind}{dims}d padding may be at most half the kernel")
        if len(x) != dims + 1 or any(n + 2 * p < k for n, k, p in zip(x[1:], ks, pd, strict=True)):
            where = "[C, L] with L" if dims == 1 else "[C, H, W] with H, W"
            k = ks[0] if len(set(ks)) == 1 else list(ks)
            raise ShapeError(f"{kind}{dims}d expects {where} >= {k}")
        return (x[0], *(_window(n, k, t, p) for n, k, t, p in zip(x[1:], ks, st, pd, strict=True))), []

    return infer


def _adaptive(dims: int) -> Infer:
    def infer(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
        (x,) = s
        if len(x) != dims + 1:
            raise ShapeError(f"adaptive_avgpool{dims}d expects [C, {'L' if dims == 1 else 'H, W'}]")
        return (x[0], *pair(a["output_size"])[:dims]), []

    return infer


def _batchnorm(dims: int) -> Infer:
    def infer(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
        (x,), n = s, a["num_features"]
        ranks = (1, 2) if dims == 1 else (3,)
        if len(x) not in ranks or x[0] != n:
            raise ShapeError(f"batchnorm{dims}d expects {'[' + str(n) + '] or [' if dims == 1 else '['}{n}, "
                             f"{'L' if dims == 1 else 'H, W'}]")  # fmt: skip
        return x, [(p, (n,)) for p in ("weight", "bias", "running_mean", "running_var")]

    return infer


def _layernorm(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
    (x,), norm = s, tuple(a["normalized_shape"])
    if x[len(x) - len(norm) :] != norm:
        raise ShapeError(f"layernorm expects [..., {', '.join(map(str, norm))}]")
    affine = a["elementwise_affine"]
    return x, ([("weight", norm)] if affine else []) + ([("bias", norm)] if affine and a["bias"] else [])


def _embedding(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
    if len(s[0]) != 1:
        raise ShapeError("embedding expects [T] ids")
    return (*s[0], a["embedding_dim"]), [("weight", (a["num_embeddings"], a["embedding_dim"]))]


def _broadcast(shapes: list[Shape], what: str) -> Shape:
    if len({len(x) for x in shapes}) != 1:
        raise ShapeError(f"{what} expects inputs of one rank")
    out = []
    for sizes in zip(*shapes, strict=True):
        big = set(sizes) - {1}
        if len(big) > 1:
            raise ShapeError(f"{what} cannot broadcast {' and '.join(map(_show, shapes))}")
        out.append(big.pop() if big else 1)
    return tuple(out)


def _add(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
    return _broadcast(s, "add"), []


def _concat(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
    if len({len(x) for x in s}) != 1:
        raise ShapeError("concat expects inputs of one rank")
    d = _axis(a["dim"], len(s[0]))
    if len({x[:d] + x[d + 1 :] for x in s}) != 1:
        raise ShapeError(f"concat along dim {a['dim']} expects equal sizes elsewhere")
    return (*s[0][:d], sum(x[d] for x in s), *s[0][d + 1 :]), []


def _mean(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
    (x,) = s
    dims = {_axis(d, len(x)) for d in a["dim"]}
    if a["keepdim"]:
        return tuple(1 if i in dims else n for i, n in enumerate(x)), []
    return tuple(n for i, n in enumerate(x) if i not in dims), []


def _encoder_layer(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
    (x,), d, ff = s, a["d_model"], a["dim_feedforward"]
    if len(x) != 2 or x[1] != d:
        raise ShapeError(f"transformer_encoder_layer expects [T, {d}] (batch first)")
    if d % a["nhead"]:
        raise ShapeError(f"transformer_encoder_layer's d_model {d} is not a multiple of nhead {a['nhead']}")
    params: Params = [
        ("self_attn.in_proj_weight", (3 * d, d)),
        ("self_attn.in_proj_bias", (3 * d,)),
        ("self_attn.out_proj.weight", (d, d)),
        ("self_attn.out_proj.bias", (d,)),
        ("linear1.weight", (ff, d)),
        ("linear1.bias", (ff,)),
        ("linear2.weight", (d, ff)),
        ("linear2.bias", (d,)),
    ]
    return x, params + [(f"norm{i}.{p}", (d,)) for i in (1, 2) for p in ("weight", "bias")]


def _positional(a: Mapping[str, Any], s: list[Shape]) -> tuple[Shape, Params]:
    (x,), table = s, tuple(a["shape"])
    full = (1, *x)
    if len(table) > len(full) or any(t not in (1, n) for t, n in zip(table[::-1], full[::-1], strict=False)):
        raise ShapeError(f"positional_embedding of shape {list(table)} does not broadcast to {_show(x)}")
    return x, [("", table)]


POS = Attr("int", minimum=1)
DIM = Attr("int")
SIZE = Attr("pair", minimum=1)
EPS = Attr("float", 1e-5, above=0, maximum=1e30)
RATE = Attr("float", REQUIRED, minimum=0, below=1)


def _conv_attrs() -> dict[str, Attr]:
    return {"in_channels": POS, "out_channels": POS, "kernel_size": SIZE, "stride": Attr("pair", 1, minimum=1),
            "padding": Attr("pair", 0, minimum=0), "bias": Attr("bool", True)}  # fmt: skip


def _pool_attrs() -> dict[str, Attr]:
    return {"kernel_size": SIZE, "stride": Attr("pair", None, minimum=1), "padding": Attr("pair", 0, minimum=0)}


def _bn_attrs() -> dict[str, Attr]:
    return {"num_features": POS, "eps": EPS, "momentum": Attr("float", 0.1, minimum=0, maximum=1)}


_TYPES = [
    LayerType("flatten", _flatten, {"start_dim": Attr("int", 1), "end_dim": Attr("int", -1)}),
    LayerType("reshape", _reshape, {"shape": Attr("ints")}),
    LayerType("permute", _permute, {"dims": Attr("ints", minimum=0)}),
    LayerType("relu", _same),
    LayerType("gelu", _same, {"approximate": Attr("choice", "none", choices=("none", "tanh"))}),
    LayerType("tanh", _same),
    LayerType("sigmoid", _same),
    LayerType("leaky_relu", _same, {"negative_slope": Attr("float", 0.01)}),
    LayerType("softmax", _softmax, {"dim": Attr("int", -1)}),
    LayerType("log_softmax", _softmax, {"dim": Attr("int", -1)}),
    LayerType("dropout", _same, {"p": RATE}),
    LayerType("linear", _linear, {"in_features": POS, "out_features": POS, "bias": Attr("bool", True)}),
    LayerType("conv1d", _conv(1), _conv_attrs()),
    LayerType("conv2d", _conv(2), _conv_attrs()),
    LayerType("maxpool1d", _pool("maxpool", 1), _pool_attrs()),
    LayerType("maxpool2d", _pool("maxpool", 2), _pool_attrs()),
    LayerType("avgpool1d", _pool("avgpool", 1), _pool_attrs()),
    LayerType("avgpool2d", _pool("avgpool", 2), _pool_attrs()),
    LayerType("adaptive_avgpool1d", _adaptive(1), {"output_size": SIZE}),
    LayerType("adaptive_avgpool2d", _adaptive(2), {"output_size": SIZE}),
    LayerType("batchnorm1d", _batchnorm(1), _bn_attrs()),
    LayerType("batchnorm2d", _batchnorm(2), _bn_attrs()),
    LayerType(
        "layernorm",
        _layernorm,
        {
            "normalized_shape": Attr("ints", minimum=1),
            "eps": EPS,
            "elementwise_affine": Attr("bool", True),
            "bias": Attr("bool", True),
        },
    ),
    LayerType("embedding", _embedding, {"num_embeddings": POS, "embedding_dim": POS}, takes_ids=True),
    LayerType("add", _add, arity=0),
    LayerType("concat", _concat, {"dim": DIM}, arity=0),
    LayerType("mean", _mean, {"dim": Attr("ints"), "keepdim": Attr("bool", False)}),
    LayerType(
        "transformer_encoder_layer",
        _encoder_layer,
        {
            "d_model": POS,
            "nhead": POS,
            "dim_feedforward": Attr("int", 2048, minimum=1),
            "dropout": Attr("float", 0.1, minimum=0, below=1),
            "activation": Attr("choice", "relu", choices=("relu", "gelu")),
            "layer_norm_eps": EPS,
            "norm_first": Attr("bool", False),
        },
    ),
    LayerType("positional_embedding", _positional, {"shape": Attr("ints", minimum=1)}),
]

LAYER_TYPES: dict[str, LayerType] = {t.name: t for t in _TYPES}
"""Every layer type by name, in the order the schema lists them."""


def with_defaults(layer: Mapping[str, Any]) -> dict[str, Any]:
    """The layer's attributes with every default filled in (the layer validated against the schema)."""
    kind = LAYER_TYPES[layer["type"]]
    return {name: layer.get(name, attr.default) for name, attr in kind.attrs.items()}
