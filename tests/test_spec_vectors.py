"""The shared model-spec vectors (`protocol/vectors/specs.json`), which the Rust trainer runs too:
valid specs have PyTorch's parameter names and shapes in order; shape errors carry the
same message in both languages; schema errors are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coordinator.models.spec import BUILTIN_MODELS, spec_from_dict

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "protocol" / "vectors" / "specs.json").read_text())


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_specs_have_pytorchs_parameters_in_order(case: dict[str, Any]) -> None:
    shapes = spec_from_dict(case["spec"]).wire_shapes()
    assert [{"name": n, "shape": list(s)} for n, s in shapes.items()] == case["parameters"]


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid_specs_are_refused(case: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as refused:
        spec_from_dict(case["spec"])
    if case["kind"] == "shape":
        assert str(refused.value) == case["message"]
    else:
        assert case["kind"] == "schema"
        assert str(refused.value).startswith("invalid model spec")


def test_the_vectors_cover_every_builtin_model() -> None:
    assert set(BUILTIN_MODELS) <= {case["name"] for case in VECTORS["valid"]}
