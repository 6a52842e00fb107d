"""`pollen model from-torch`: a user's nn.Module becomes a spec whose built module computes the
same function, with the user's own state_dict names; what has no equivalent is refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from coordinator.cli import app
from coordinator.models.from_torch import convert
from coordinator.models.spec import spec_from_dict
from coordinator.models.torch_model import build_module, load_wire_weights
from tests import user_models

HERE = Path(__file__).resolve().parent


def _same_function(user: torch.nn.Module, raw: dict[str, Any], x: torch.Tensor) -> None:
    built = build_module(spec_from_dict(raw))
    load_wire_weights(built, {k: v.numpy() for k, v in user.state_dict().items() if v.is_floating_point()
                              and k in spec_from_dict(raw).wire_shapes()})  # fmt: skip
    user.eval(), built.eval()
    with torch.no_grad():
        torch.testing.assert_close(built(x), user(x), atol=1e-5, rtol=1e-5)


def test_a_residual_network_converts_with_the_users_names() -> None:
    torch.manual_seed(0)
    user = user_models.ResNet()
    done = convert(user, (1, 28, 28), name="resnet")
    names = list(spec_from_dict(done.spec).wire_shapes())
    assert names[:2] == ["stem.0.weight", "stem.0.bias"] and "layer1.1.bn2.running_var" in names
    assert {layer["type"] for layer in done.spec["layers"]} >= {"add", "batchnorm2d", "avgpool2d", "gelu", "dropout"}
    adds = [layer for layer in done.spec["layers"] if layer["type"] == "add"]
    assert len(adds) == 2 and all(len(a["inputs"]) == 2 for a in adds)
    _same_function(user, done.spec, torch.randn(5, 1, 28, 28))


def test_a_vision_transformer_converts_and_its_weights_load_into_the_users_class() -> None:
    torch.manual_seed(1)
    user = user_models.ViT()
    done = convert(user, (1, 28, 28), name="vit")
    kinds = [layer["type"] for layer in done.spec["layers"]]
    assert kinds.count("transformer_encoder_layer") == 2 and "positional_embedding" in kinds
    fresh = user_models.ViT()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in done.weights.items()})  # strict: every key
    _same_function(fresh, done.spec, torch.randn(3, 1, 28, 28))


def test_a_text_model_takes_integer_ids() -> None:
    done = convert(user_models.TextClassifier(), (6,), name="text", input_dtype="int64")
    assert done.spec["input_dtype"] == "int64" and done.spec["layers"][0]["type"] == "embedding"
    _same_function(user_models.TextClassifier().eval(), done.spec, torch.randint(0, 100, (4, 6)))


def test_a_sequential_model_is_a_plain_chain_and_unused_weights_are_reported() -> None:
    done = convert(user_models.Mlp(), (3, 4), name="mlp")
    assert all("inputs" not in layer and "name" not in layer for layer in done.spec["layers"])
    assert [layer["type"] for layer in done.spec["layers"]] == ["dropout", "flatten", "linear", "tanh", "linear"]
    assert done.unused == ["unused.weight", "unused.bias"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            user_models.Silu,
            r"torch.nn.functional.silu is not supported, at .*user_models.py:\d+: return functional.silu",
        ),
        (user_models.MixesBatch, r"a reshape that does not keep the batch .* at .*user_models.py:\d+: return self.fc"),
        (user_models.Grouped, r"conv2d with groups=2 is not supported, at .*user_models.py"),
    ],
)
def test_what_has_no_equivalent_is_refused_by_name_and_line(model: type[torch.nn.Module], message: str) -> None:
    shape = (2, 6, 6) if model is user_models.Grouped else (4,)
    with pytest.raises(ValueError, match=message):
        convert(model(), shape, name="bad")


def test_the_cli_writes_a_spec_and_weights_for_serve_init(tmp_path: Path) -> None:
    spec_path, weights = tmp_path / "spec.json", tmp_path / "w.safetensors"
    args = ["model", "from-torch", f"{HERE / 'user_models.py'}:ResNet", "--input-shape", "1,28,28",
            "-o", str(spec_path), "--weights", str(weights), "--label-smoothing", "0.1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    raw = json.loads(spec_path.read_text())
    assert raw["name"] == "ResNet" and raw["loss"] == {"type": "cross_entropy", "label_smoothing": 0.1}
    state = load_file(weights)
    user_models.ResNet().load_state_dict(state)  # strict, num_batches_tracked included
    check = CliRunner().invoke(app, ["model", "check", str(spec_path), "--json"])
    assert check.exit_code == 0 and json.loads(check.output)["count"] == sum(
        v.numel() for v in state.values() if v.is_floating_point()
    )


def test_the_cli_refuses_a_bad_factory_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["model", "from-torch", "nope", "--input-shape", "4", "-o", str(tmp_path / "s")])
    assert result.exit_code == 2 and "MODULE:FACTORY" in result.output


def test_an_input_shape_the_module_cannot_take_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ResNet cannot run on input of shape \[3, 2, 28, 28\]"):
        convert(user_models.ResNet(), (2, 28, 28), name="bad")
