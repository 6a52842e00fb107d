"""Graph specs (`protocol/vectors/graph-specs.json`): named inputs, module paths, every layer
type and loss. The walker's parameters and layer outputs equal what PyTorch builds and runs;
bad graphs are refused with the vectors' messages; the schema file is the layer table's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.models.graph import walk
from coordinator.models.layer_types import LAYER_TYPES
from coordinator.models.spec import ModelSpec, spec_from_dict
from coordinator.models.spec_schema import model_spec_schema
from coordinator.models.torch_model import build_module

PROTOCOL = Path(__file__).resolve().parents[1] / "protocol"
VECTORS = json.loads((PROTOCOL / "vectors" / "graph-specs.json").read_text())


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_graphs_have_pytorchs_parameters_and_outputs(case: dict[str, Any]) -> None:
    spec = spec_from_dict(case["spec"])
    assert [{"name": n, "shape": list(s)} for n, s in spec.wire_shapes().items()] == case["parameters"]
    found = walk(spec.nodes(), spec.input_shape, spec.input_dtype == "int64")
    assert [list(s) for s in found.outputs] == case["outputs"]


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_built_graphs_train_a_step(case: dict[str, Any]) -> None:
    from coordinator.models.local_training import TrainConfig, train_delta
    from coordinator.models.torch_model import wire_weights

    spec = spec_from_dict(case["spec"])
    module = build_module(spec, seed=0)
    rng = torch.Generator().manual_seed(0)
    ids = spec.input_dtype == "int64"
    x = torch.randint(0, 5, (8, *spec.input_shape), generator=rng) if ids else torch.randn(8, *spec.input_shape)
    y = torch.randint(0, spec.num_classes if spec.num_classes > 1 else 2, (8,), generator=rng)
    if spec.loss["type"] == "mse":
        y = torch.randn(8, generator=rng)
    delta, metrics = train_delta(module, wire_weights(module), x.numpy(), y.numpy(), TrainConfig(1, 4, 0.1, seed=0))
    assert set(delta) == set(spec.wire_shapes())
    assert any(float(abs(d).max()) > 0 for d in delta.values())
    assert metrics["train_loss"] > 0


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid_graphs_are_refused_with_the_vectors_message(case: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as refused:
        spec_from_dict(case["spec"])
    assert str(refused.value) == case["message"]


def test_the_vectors_cover_every_layer_type_and_loss() -> None:
    specs = [case["spec"] for case in VECTORS["valid"]]
    assert {layer["type"] for s in specs for layer in s["layers"]} == set(LAYER_TYPES)
    assert {s.get("loss", {"type": "cross_entropy"})["type"] for s in specs} == {
        "cross_entropy",
        "mse",
        "bce_with_logits",
    }


def test_the_schema_file_is_the_layer_tables() -> None:
    written = json.loads((PROTOCOL / "schemas" / "model-spec.schema.json").read_text())
    assert written == model_spec_schema()


def test_a_layer_with_an_attribute_of_another_type_is_refused_by_the_schema() -> None:
    bad = {"name": "m", "input_shape": [4], "num_classes": 2, "layers": [{"type": "relu", "p": 0.5}]}
    with pytest.raises(ValueError, match="invalid model spec"):
        spec_from_dict(bad)


WINDOW = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.integers(5, 12), st.integers(5, 12))


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["conv2d", "maxpool2d", "avgpool2d", "conv1d", "maxpool1d", "avgpool1d"]), w=WINDOW)
def test_window_layers_infer_torchs_output_shape(kind: str, w: tuple[int, int, int, int, int]) -> None:
    k, s, p, h, width = w
    two = kind.endswith("2d")
    attrs: dict[str, Any] = {"kernel_size": k, "stride": s, "padding": min(p, k // 2)}
    if kind.startswith("conv"):
        attrs.update(in_channels=2, out_channels=3, padding=p)
    shape = [2, h, width] if two else [2, h]
    raw = {"name": "w", "input_shape": shape, "num_classes": 2, "layers": [{"type": kind, **attrs}]}
    spec = ModelSpec(raw)  # one layer, walked without the final width check
    inferred = walk(spec.nodes(), tuple(shape), False).outputs[0]
    assert tuple(build_module(spec).outputs(torch.randn(1, *shape))[0].shape[1:]) == inferred


def _mutate(value: Any, draw: Any) -> Any:
    """One random change somewhere in a JSON value: a replaced leaf, a dropped or added key."""
    if isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        choice = draw(st.integers(0, 2))
        if choice == 0:
            return {k: v for k, v in value.items() if k != key}
        if choice == 1:
            return {
                **value,
                draw(st.sampled_from(["inputs", "name", "module", "dim", "shape", "x"])): _LEAVES_DRAW(draw),
            }
        return {**value, key: _mutate(value[key], draw)}
    if isinstance(value, list) and value:
        i = draw(st.integers(0, len(value) - 1))
        return [*value[:i], _mutate(value[i], draw), *value[i + 1 :]]
    return _LEAVES_DRAW(draw)


def _LEAVES_DRAW(draw: Any) -> Any:
    leaves = st.one_of(
        st.integers(-3, 70), st.sampled_from([0, 1, -1, 2**40]), st.booleans(), st.text(max_size=6),
        st.lists(st.integers(-2, 9), max_size=5), st.sampled_from(["input", "a", "layers.0", "gelu"]), st.none(),
    )  # fmt: skip
    return draw(leaves)


@settings(max_examples=400, deadline=None)
@given(case=st.sampled_from(VECTORS["valid"]), data=st.data())
def test_a_mutated_spec_loads_or_is_refused_with_a_clear_error(case: dict[str, Any], data: st.DataObject) -> None:
    """An operator's spec file is untrusted input: any change loads, or raises ValueError (never
    another exception), and what loads builds and runs in PyTorch."""
    raw = case["spec"]
    for _ in range(data.draw(st.integers(1, 3))):
        raw = _mutate(raw, data.draw)
    try:
        spec = spec_from_dict(raw)
    except ValueError:
        return
    if spec.num_parameters() > 5_000_000:
        return  # valid, but too large to build in a unit test
    ids = spec.input_dtype == "int64"
    x = torch.zeros(2, *spec.input_shape) if ids else torch.randn(2, *spec.input_shape)
    assert build_module(spec).eval()(x).shape == (2, spec.num_classes)
