"""The spec's layer list read as a graph, and walked to check that every layer fits its input.

A spec's `layers` run in order. A layer without `inputs` takes the output of the layer before
it (the model's input, for the first), so a plain list is a chain: every v1 spec is a graph
spec. A layer with `inputs` names earlier layers (by their `name`) or `"input"`, which is how
residual adds and concatenations are written. The last layer's output is the model's.

A layer's parameters live under its `module` path, PyTorch's `state_dict` prefix; the default
is `layers.<index>`, the name v1 specs always had. A spec converted from a user's `nn.Module`
keeps that module's own paths, so its weights load into the user's class.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.models.layer_types import LAYER_TYPES, Shape, ShapeError, with_defaults

MODEL_INPUT = "input"
MAX_RANK = 4  # dims per example, without the batch: what the browser trainer's tensors hold
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


@dataclass(frozen=True)
class Node:
    index: int
    type: str
    attrs: dict[str, Any]
    inputs: tuple[int, ...]  # earlier layers' indices; -1 is the model's input
    module: str
    name: str | None

    def where(self, shapes: Sequence[Shape]) -> str:
        """How errors name this layer: its index, its name if it has one, what it was given."""
        label = f'layer {self.index} "{self.name}"' if self.name else f"layer {self.index}"
        given = " and ".join(str(list(s)) for s in shapes)
        return f"{label} with input shape{'s' if len(shapes) > 1 else ''} {given}"


@dataclass(frozen=True)
class Walk:
    """What walking a graph found: each layer's output shape, and the wire tensors in order."""

    outputs: tuple[Shape, ...]
    params: dict[str, Shape]


def parse_nodes(layers: Sequence[dict[str, Any]]) -> list[Node]:
    """Resolve names, inputs and module paths; refuse dangling or unused layers."""
    names: dict[str, int] = {}
    nodes: list[Node] = []
    used: set[int] = set()
    for i, layer in enumerate(layers):
        refs = layer.get("inputs")
        if refs is None:
            inputs: tuple[int, ...] = (i - 1,)
        else:
            missing = [r for r in refs if r != MODEL_INPUT and r not in names]
            if missing:
                raise ValueError(f'layer {i} takes "{missing[0]}", which no earlier layer is named')
            inputs = tuple(-1 if r == MODEL_INPUT else names[r] for r in refs)
        name = layer.get("name")
        if name is not None:
            if name == MODEL_INPUT or name in names:
                taken = "the model's input" if name == MODEL_INPUT else f"layer {names[name]}"
                raise ValueError(f'layer {i} is named "{name}", which names {taken} already')
            names[name] = i
        kind = LAYER_TYPES[layer["type"]]
        if kind.arity == 0 and len(inputs) < 2:
            raise ValueError(f"layer {i}: {kind.name} takes two or more inputs")
        if kind.arity == 1 and len(inputs) != 1:
            raise ValueError(f"layer {i}: {kind.name} takes one input, not {len(inputs)}")
        module = layer.get("module", f"layers.{i}")
        if not _PATH.fullmatch(module):
            raise ValueError(f'layer {i}: module "{module}" is not a dotted path of names')
        used.update(inputs)
        nodes.append(Node(i, kind.name, with_defaults(layer), inputs, module, name))
    unused = [n.index for n in nodes[:-1] if n.index not in used]
    if unused:
        raise ValueError(f"layer {unused[0]}'s output is never used: only the last layer's is the model's")
    return nodes


def walk(nodes: Sequence[Node], input_shape: Shape, takes_ids: bool) -> Walk:
    """Infer each layer's output shape and collect its parameters under full `state_dict` names."""
    outputs: list[Shape] = []
    ids: list[bool] = []
    params: dict[str, Shape] = {}
    owner: dict[str, int] = {}
    for node in nodes:
        shapes = [input_shape if j < 0 else outputs[j] for j in node.inputs]
        given_ids = [takes_ids if j < 0 else ids[j] for j in node.inputs]
        kind = LAYER_TYPES[node.type]
        if kind.takes_ids != all(given_ids) or len(set(given_ids)) > 1:
            want = "integer ids (input_dtype int64)" if kind.takes_ids else "floats, not the ids an embedding takes"
            raise ValueError(f"{node.where(shapes)}: {node.type} expects {want}")
        try:
            shape, own = kind.infer(node.attrs, shapes)
        except ShapeError as e:
            raise ValueError(f"{node.where(shapes)}: {e}") from None
        if not 1 <= len(shape) <= MAX_RANK:
            raise ValueError(f"{node.where(shapes)}: {node.type} would make {len(shape)} dims per example; "
                             f"models keep 1 to {MAX_RANK}")  # fmt: skip
        if own:
            _claim(node, owner)
        for local, param_shape in own:
            params[f"{node.module}.{local}" if local else node.module] = param_shape
        outputs.append(shape)
        ids.append(False)
    return Walk(tuple(outputs), {name: params[name] for name in sorted(params, key=_state_dict_order(params))})


def _state_dict_order(params: dict[str, Shape]) -> Any:
    """PyTorch's `state_dict` order: a module's own tensors, then its children's, each in the
    order first registered (here: first met in the walk)."""
    seen: dict[str, int] = {}
    for name in params:
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            seen.setdefault(".".join(parts[:k]), len(seen))

    def key(name: str) -> tuple[tuple[int, int], ...]:
        parts = name.split(".")
        prefixes = [".".join(parts[:k]) for k in range(1, len(parts) + 1)]
        return (*((1, seen[p]) for p in prefixes[:-1]), (0, seen[name]))

    return key


def _claim(node: Node, owner: dict[str, int]) -> None:
    """A module path holds one layer's parameters: no sharing, no nesting inside another's."""
    path = node.module
    for other, index in owner.items():
        if other == path or other.startswith(path + ".") or path.startswith(other + "."):
            raise ValueError(
                f'layer {node.index} puts its parameters at "{path}", which clashes with layer {index} at "{other}"'
            )
    owner[path] = node.index
