"""Model specs: shapes agree with PyTorch, names are state_dict keys, bad specs fail clearly."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from coordinator.models.spec import BUILTIN_MODELS, load_spec, spec_from_dict
from coordinator.models.torch_model import build_module, load_wire_weights, wire_weights
from coordinator.models.weights_file import read_weights, write_weights


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_spec_shapes_are_the_state_dict(name: str) -> None:
    spec = load_spec(name)
    module = build_module(spec)
    floats = {k: tuple(v.shape) for k, v in module.state_dict().items() if v.is_floating_point()}
    assert floats == spec.wire_shapes()
    assert module(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_mcmahan_cnn_has_the_papers_parameter_count() -> None:
    assert load_spec("mnist-cnn").num_parameters() == 1_663_370


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            [{"type": "flatten"}, {"type": "linear", "in_features": 10, "out_features": 10}],
            "expects a flat input of 10",
        ),
        ([{"type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3}], "expects [3, H, W]"),
        ([{"type": "flatten"}, {"type": "linear", "in_features": 784, "out_features": 5}], "expected [10]"),
        ([{"type": "lstm"}], "invalid model spec"),
    ],
)
def test_bad_specs_fail_with_a_clear_message(layers: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        spec_from_dict({"name": "x", "input_shape": [1, 28, 28], "num_classes": 10, "layers": layers})


def test_user_spec_file(tmp_path) -> None:
    path = tmp_path / "tiny.json"
    path.write_text(
        json.dumps(
            {
                "name": "tiny",
                "input_shape": [784],
                "num_classes": 10,
                "layers": [{"type": "linear", "in_features": 784, "out_features": 10}],
            }
        )
    )
    assert load_spec(path).wire_shapes() == {"layers.0.weight": (10, 784), "layers.0.bias": (10,)}


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weight_files_round_trip_into_load_state_dict(tmp_path, suffix: str) -> None:
    spec = load_spec("mnist-cnn-bn")
    weights = wire_weights(build_module(spec, seed=1))
    path = tmp_path / f"m{suffix}"
    write_weights(path, spec, weights)
    state = torch.load(path) if suffix == ".pt" else __import__("safetensors.torch").torch.load_file(path)
    build_module(spec).load_state_dict(state)  # strict: every key, buffers included
    back = read_weights(path, spec)
    assert all(np.array_equal(back[k], weights[k]) for k in weights)


def test_loading_wrong_names_fails() -> None:
    module = build_module(load_spec("mnist-mlp"))
    with pytest.raises(ValueError, match="missing"):
        load_wire_weights(module, {"layers.1.weight": np.zeros((128, 784), np.float32)})
