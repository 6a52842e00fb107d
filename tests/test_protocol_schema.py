"""The compiled header check never accepts what `jsonschema`, the authority, rejects (see `protocol.schema`)."""

from __future__ import annotations

import copy
import json
from typing import Any

import fastjsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.protocol import ProtocolError
from coordinator.protocol.schema import compiled, validate_header, validator
from coordinator.resources import protocol_dir

VALID = [c["header"] for c in json.loads((protocol_dir() / "vectors" / "frames.json").read_text())["valid"]]
FAST = sorted({h["type"] for h in VALID if compiled(f"{h['type']}.schema.json") is not None})

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.sampled_from([0, 1, -1, 1.0, 2.5, 1e30, 1.0000001e30, -1e30, 9007199254740991, 9007199254740992])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=140),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=70), inner, max_size=66),
    max_leaves=80,
)


def _fast_accepts(header: dict[str, Any]) -> bool:
    check = compiled(f"{header['type']}.schema.json")
    assert check is not None
    try:
        check(copy.deepcopy(header))
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def _authority_accepts(header: dict[str, Any]) -> bool:
    return bool(validator(f"{header['type']}.schema.json").is_valid(header))


def test_the_hot_message_types_are_compiled() -> None:
    # Every message a coordinator receives in a round; train and evaluate refer to the model spec.
    assert {"hello", "result", "heartbeat", "chunk", "error"} <= set(FAST)
    assert compiled("train.schema.json") is None


@pytest.mark.parametrize("header", [h for h in VALID if h["type"] in FAST], ids=lambda h: h["type"])
def test_valid_vectors_pass_the_compiled_check(header: dict[str, Any]) -> None:
    assert _fast_accepts(header)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid header with some fields dropped, replaced or added: many are invalid, some are not."""
    header: dict[str, Any] = copy.deepcopy(draw(st.sampled_from([h for h in VALID if h["type"] in FAST])))
    for _ in range(draw(st.integers(1, 3))):
        keys = sorted(k for k in header if k != "type")
        action = draw(st.sampled_from(["drop", "replace", "add", "nest"]))
        if action == "drop" and keys:
            del header[draw(st.sampled_from(keys))]
        elif action == "replace" and keys:
            header[draw(st.sampled_from(keys))] = draw(json_values)
        elif action == "nest" and keys:
            key = draw(st.sampled_from(keys))
            if isinstance(header[key], dict):
                header[key][draw(st.text(max_size=70))] = draw(json_values)
        else:
            header[draw(st.text(max_size=20))] = draw(json_values)
    return header


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_the_compiled_check_accepts_nothing_the_authority_rejects(header: dict[str, Any]) -> None:
    if _fast_accepts(header):
        assert _authority_accepts(header), header


def test_a_header_the_compiled_check_rejects_gets_jsonschemas_reason() -> None:
    header = {"type": "result", "reply_to": "t", "num_examples": 0, "metrics": {}}
    with pytest.raises(ProtocolError, match=r"result: num_examples: 0 is less than the minimum of 1"):
        validate_header(header)
