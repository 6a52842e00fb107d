"""`pollen model check`: a spec's parameters as PyTorch names them, its sizes per encoding, and clear refusals."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from coordinator.cli import app
from coordinator.models.spec import BUILTIN_MODELS, load_spec
from coordinator.models.summary import summarize
from coordinator.models.torch_model import build_module
from coordinator.protocol.encodings import ENCODINGS, Encoding
from coordinator.protocol.tensors import encode_tensors


@pytest.mark.parametrize("model", BUILTIN_MODELS)
def test_the_parameters_are_the_modules_own_state_dict_tensors(model: str) -> None:
    result = CliRunner().invoke(app, ["model", "check", model, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    state = {k: v for k, v in build_module(load_spec(model)).state_dict().items() if v.is_floating_point()}
    assert [(p["name"], tuple(p["shape"])) for p in summary["parameters"]] == [
        (k, tuple(v.shape)) for k, v in state.items()
    ]
    assert summary["count"] == sum(v.numel() for v in state.values())


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_the_sizes_are_what_the_encoder_writes(encoding: Encoding) -> None:
    spec = load_spec("mnist-cnn-bn")
    rng = np.random.default_rng(0)
    weights = {n: rng.standard_normal(s).astype(np.float32) for n, s in spec.wire_shapes().items()}
    payload = encode_tensors(weights, encoding)
    (header_length,) = struct.unpack("<Q", payload[:8])
    assert summarize(spec).data_bytes(encoding) == len(payload) - 8 - header_length


def test_the_table_names_the_model_and_its_sizes() -> None:
    result = CliRunner().invoke(app, ["model", "check", "mnist-cnn"])
    assert result.exit_code == 0, result.output
    assert "mnist-cnn" in result.stdout and "layers.7.weight" in result.stdout and "1,663,370" in result.stdout
    assert "fp32 6.653 MB" in result.stdout


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"name": "x", "input_shape": [1, 28, 28], "num_classes": 10, "layers": [{"type": "flatten"}, '
         '{"type": "linear", "in_features": 700, "out_features": 10}]}', "linear expects a flat input of 700"),
        ('{"name": "x", "input_shape": [1, 28, 28], "num_classes": 10, "layers": [{"type": "lstm"}]}', "layers/0"),
        ("{nope", "is not JSON"),
    ],
)  # fmt: skip
def test_a_bad_spec_is_refused_naming_the_file_and_the_fault(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "spec.json"
    path.write_text(content)
    result = CliRunner().invoke(app, ["model", "check", str(path)])
    assert result.exit_code == 2
    flat = "".join(result.output.replace("│", "").split())  # rich boxes and wraps the message
    assert str(path) in flat
    assert "".join(says.split()) in flat
