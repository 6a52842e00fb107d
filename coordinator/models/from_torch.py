"""Convert a user's `nn.Module` into a model spec, with torch.fx.

Theory of operation. Symbolic tracing (in training mode, so a `training`-guarded dropout is
kept) records `forward`'s tensor operations as a graph whose leaves are PyTorch's own modules.
`ShapeProp` runs that graph once on an example batch, so every tensor's shape is known. Each
graph node then becomes spec layers, or none:

- a call of a PyTorch module or function becomes its layer (`fx_layers` has the table);
- sizes read from a tensor (`x.size(0)`, `x.shape`) become nothing: the reshape that consumes
  them is written with its propagated per-example shape, so size arithmetic needs no layers;
- a parameter of the module itself (`get_attr`) is accepted where it is added to a tensor: a
  learned positional embedding;
- anything else is refused, naming the operation and its line in the user's code.

Layers carry the fx node's name; names only other layers refer to survive, and a layer fed by
the one before it drops its `inputs`, so a sequential model converts to a plain chain. The
result is checked by building the spec, loading the user's weights into it by their own
`state_dict` names, and comparing outputs with the user's module on random input.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import fx, nn
from torch.fx.node import _get_qualified_name
from torch.fx.passes.shape_prop import ShapeProp

from coordinator.models import fx_layers as fxl
from coordinator.models.fx_layers import Layer, Unsupported
from coordinator.models.layer_types import LAYER_TYPES, REQUIRED
from coordinator.models.spec import spec_from_dict
from coordinator.models.torch_model import build_module, load_wire_weights

BATCH = 3  # an unusual batch size, so a shape that kept it kept the batch
TORCH_DIR = os.path.dirname(torch.__file__)


@dataclass(frozen=True)
class Size:
    """A value read from a tensor's size: meaningful only to the reshape that uses it."""


@dataclass(frozen=True)
class Param:
    path: str


@dataclass(frozen=True)
class Converted:
    spec: dict[str, Any]
    weights: dict[str, np.ndarray]  # the module's float state the spec uses, by state_dict name
    unused: list[str]  # the module's float state its forward never reaches
    max_error: float  # largest |difference| of the two forwards on random input


def convert(
    module: nn.Module,
    input_shape: tuple[int, ...],
    *,
    name: str,
    input_dtype: str = "float32",
    loss: dict[str, Any] | None = None,
    tolerance: float = 1e-5,
) -> Converted:
    """The spec of `module` for inputs of per-example shape `input_shape`; raises `ValueError`
    for what cannot be converted, and when the built spec's forward strays beyond `tolerance`."""
    was_training = module.training
    try:
        tracing = _Tracing(module, input_shape, input_dtype)
        layers = tracing.layers()
    finally:
        module.train(was_training)
    spec: dict[str, Any] = {"name": name, "input_shape": list(input_shape), "num_classes": tracing.width}
    if input_dtype != "float32":
        spec["input_dtype"] = input_dtype
    if loss is not None:
        spec["loss"] = loss
    spec["layers"] = layers
    return _check(module, spec, tolerance)


class _Tracing:
    def __init__(self, module: nn.Module, input_shape: tuple[int, ...], input_dtype: str) -> None:
        self.root = module
        tracer = fx.Tracer()
        tracer.record_stack_traces = True
        try:
            module.train()
            self.graph = tracer.trace(module)
        except Exception as e:  # fx raises several kinds; each means "not traceable"
            raise ValueError(f"torch.fx cannot trace {type(module).__name__}.forward: {e}") from None
        gm = fx.GraphModule(module, self.graph)
        gm.eval()
        example = _example(input_shape, input_dtype, BATCH)
        try:
            ShapeProp(gm).propagate(example)
        except Exception as e:  # the user's code raised: its message says why
            raise ValueError(
                f"{type(module).__name__} cannot run on input of shape {list(example.shape)}: {e}"
            ) from None
        self.env: dict[fx.Node, str | Size | Param] = {}
        self.out: list[Layer] = []
        self.width = 0  # the output's size per example, once the output node is met

    def layers(self) -> list[Layer]:
        for node in self.graph.nodes:
            try:
                self._visit(node)
            except Unsupported as e:
                raise ValueError(f"{e} is not supported{_where(node)}") from None
        return self.out

    def _visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            if self.env:
                raise Unsupported(f"a second forward argument ({node.name})")
            self.env[node] = "input"
        elif node.op == "get_attr":
            self.env[node] = Param(str(node.target))
        elif node.op == "output":
            result = node.args[0]  # a tuple or dict of outputs is not a node, and is refused below
            shape = _shape(result)
            if shape is None or len(shape) != 1:
                raise Unsupported("an output that is not one [batch, outputs] tensor")
            self._source(result)
            self.width = shape[0]
        elif node.op == "call_module":
            sub = self.root.get_submodule(str(node.target))
            self._emit(node, fxl.module_layers(sub, str(node.target)), node.args[:1])
        elif self._is_size(node):
            self.env[node] = Size()
        else:
            self._call(node, node.target if node.op == "call_function" else str(node.target))

    def _is_size(self, node: fx.Node) -> bool:
        if node.op == "call_method" and node.target == "size":
            return True
        if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
            return True
        return "tensor_meta" not in node.meta and all(isinstance(self.env.get(a), Size) for a in node.all_input_nodes)

    def _call(self, node: fx.Node, target: Any) -> None:
        args, kwargs = node.args, dict(node.kwargs)
        out, given = _shape(node), _shape(args[0]) if args and isinstance(args[0], fx.Node) else None
        if target in fxl.ADDS:
            self._add(node)
        elif target in fxl.PASS_THROUGH:
            self.env[node] = self._source(args[0])
        elif target in fxl.UNARY:
            self._emit(node, [{"type": fxl.UNARY[target]}], args[:1])
        elif target in fxl.SOFTMAX:
            dim = fxl.arg(args, kwargs, 1, "dim")
            self._emit(node, [{"type": fxl.SOFTMAX[target], "dim": fxl.dim_of(dim, str(target))}], args[:1])
        elif target in (torch.nn.functional.gelu, "gelu"):
            self._emit(node, [{"type": "gelu", "approximate": kwargs.get("approximate", "none")}], args[:1])
        elif target in (torch.nn.functional.leaky_relu,):
            slope = fxl.arg(args, kwargs, 1, "negative_slope", 0.01)
            self._emit(node, [{"type": "leaky_relu", "negative_slope": slope}], args[:1])
        elif target in (torch.nn.functional.dropout, "dropout"):
            if fxl.arg(args, kwargs, 2, "training", True):
                self._emit(node, [{"type": "dropout", "p": fxl.arg(args, kwargs, 1, "p", 0.5)}], args[:1])
            else:
                self.env[node] = self._source(args[0])
        elif target in (torch.flatten, "flatten"):
            start, end = fxl.arg(args, kwargs, 1, "start_dim", 0), fxl.arg(args, kwargs, 2, "end_dim", -1)
            self._emit(node, [{"type": "flatten", "start_dim": start, "end_dim": end}], args[:1])
        elif target in (torch.reshape, "reshape", "view"):
            self._emit(node, [{"type": "reshape", "shape": list(_kept(node, out))}], args[:1])
        elif target in (torch.permute, "permute"):
            dims = list(args[1:]) if len(args) > 2 else list(fxl.arg(args, kwargs, 1, "dims"))
            self._emit(node, [{"type": "permute", "dims": dims}], args[:1])
        elif target in (torch.transpose, "transpose") and given is not None:
            dims = list(range(len(given) + 1))
            a, b = (cast(int, d) % len(dims) for d in args[1:3])
            dims[a], dims[b] = dims[b], dims[a]
            self._emit(node, [{"type": "permute", "dims": dims}], args[:1])
        elif target in (torch.mean, "mean"):
            dim = fxl.arg(args, kwargs, 1, "dim")
            if dim is None:
                raise Unsupported("mean over every dimension (the batch too)")
            dims = [dim] if isinstance(dim, int) else list(dim)
            keep = bool(fxl.arg(args, kwargs, 2, "keepdim", False))
            self._emit(node, [{"type": "mean", "dim": dims, "keepdim": keep}], args[:1])
        elif target in (torch.cat, torch.concat):
            tensors = fxl.arg(args, kwargs, 0, "tensors")
            self._emit(node, [{"type": "concat", "dim": fxl.arg(args, kwargs, 1, "dim", 0)}], tuple(tensors))
        elif target in fxl.POOLS:
            k = fxl.arg(args, kwargs, 1, "kernel_size")
            layer = {"type": fxl.POOLS[target], "kernel_size": k, "stride": fxl.arg(args, kwargs, 2, "stride") or k,
                     "padding": fxl.arg(args, kwargs, 3, "padding", 0)}  # fmt: skip
            self._emit(node, [layer], args[:1])
        elif target in fxl.ADAPTIVE:
            size = fxl.arg(args, kwargs, 1, "output_size")
            self._emit(node, [{"type": fxl.ADAPTIVE[target], "output_size": size}], args[:1])
        else:
            raise Unsupported(f"Tensor.{target}" if isinstance(target, str) else _get_qualified_name(target))

    def _add(self, node: fx.Node) -> None:
        left, right = node.args[0], node.args[1]
        values = [self.env.get(a) if isinstance(a, fx.Node) else a for a in (left, right)]
        params = [v for v in values if isinstance(v, Param)]
        if params:
            (param,), (x,) = params, [a for a, v in zip((left, right), values, strict=True) if not isinstance(v, Param)]
            shape = list(self.root.get_parameter(param.path).shape)
            self._emit(node, [{"type": "positional_embedding", "shape": shape, "module": param.path}], (x,))
        elif all(isinstance(v, str) for v in values):
            self._emit(node, [{"type": "add"}], (left, right))
        else:
            raise Unsupported("adding a constant or a size to a tensor")

    def _source(self, value: Any) -> str:
        found = self.env.get(value) if isinstance(value, fx.Node) else None
        if not isinstance(found, str):
            raise Unsupported(f"using {value!r} as a tensor")
        return found

    def _emit(self, node: fx.Node, layers: list[Layer], inputs: tuple[Any, ...]) -> None:
        names = [self._source(x) for x in inputs]
        if not layers:
            self.env[node] = names[0]
            return
        for i, layer in enumerate(layers):
            name = node.name if i == len(layers) - 1 else f"{node.name}_{i}"
            self.out.append({"type": layer["type"], "name": name, "inputs": names,
                             **{k: v for k, v in layer.items() if k != "type"}})  # fmt: skip
            names = [name]
        self.env[node] = names[0]


def _tidy(layers: list[Layer]) -> None:
    """Drop what the spec's defaults say anyway: chained inputs, unreferenced names, default attributes."""
    previous = "input"
    for layer in layers:
        if layer["inputs"] == [previous]:
            del layer["inputs"]
        previous = layer["name"]
    referenced = {n for layer in layers for n in layer.get("inputs", [])}
    for layer in layers:
        if layer["name"] not in referenced:
            del layer["name"]
        for key, attr in LAYER_TYPES[layer["type"]].attrs.items():
            if key in layer and attr.default is not REQUIRED and layer[key] == attr.default:
                del layer[key]


def _example(input_shape: tuple[int, ...], input_dtype: str, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if input_dtype == "int64":
        return torch.randint(0, 2, (batch, *input_shape), generator=generator)
    return torch.randn(batch, *input_shape, generator=generator)


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    shape = getattr(meta, "shape", None)
    return None if shape is None else tuple(int(d) for d in shape[1:])


def _kept(node: fx.Node, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    full = node.meta.get("tensor_meta")
    if shape is None or full is None or int(full.shape[0]) != BATCH:
        raise Unsupported("a reshape that does not keep the batch as dimension 0")
    return shape


def _where(node: fx.Node) -> str:
    """`, at FILE:LINE: CODE`: the user's line that made `node` (the last frame outside torch)."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in \S+\n\s*(.*)', node.stack_trace or "")
    user = [f for f in frames if not f[0].startswith(TORCH_DIR)]
    if not user:
        return f" (graph node {node.name})"
    path, line, code = user[-1]
    here = os.path.relpath(path)
    return f", at {path if here.startswith('..') else here}:{line}: {code.strip()}"


def _check(module: nn.Module, raw: dict[str, Any], tolerance: float) -> Converted:
    _tidy(raw["layers"])
    spec = spec_from_dict(raw)
    state = {
        k: v.detach().cpu().float().numpy().copy() for k, v in module.state_dict().items() if v.is_floating_point()
    }
    wanted = spec.wire_shapes()
    built = build_module(spec)
    load_wire_weights(built, {k: state[k] for k in wanted})
    was_training = module.training
    module.eval()
    built.eval()
    x = _example(spec.input_shape, spec.input_dtype, 4)
    with torch.no_grad():
        theirs, ours = module(x), built(x)
    module.train(was_training)
    error = float((theirs - ours).abs().max())
    scale = max(1.0, float(theirs.abs().max()))
    if not math.isfinite(error) or error > tolerance * scale:
        raise ValueError(
            f"the converted model's output differs from the module's by {error:.3g} (tolerance {tolerance:g})"
        )
    unused = [k for k in state if k not in wanted]
    return Converted(raw, {k: state[k] for k in wanted}, unused, error)
