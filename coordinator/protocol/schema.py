"""Validation of headers against the JSON Schemas in `protocol/schemas/`.

`jsonschema` is the authority: what it rejects is rejected, with its message. It takes about
60 µs a header, though, a tenth of what a coordinator spends on a mnist-mlp reply; so a header
is first checked by `fastjsonschema`'s compiled form of the same schema (2 µs), and is accepted
when that check passes. A header it rejects goes to `jsonschema`, which decides and explains.
Only schemas without `$ref` are compiled, and in them only keywords both libraries read the same
way (draft 7's, which these schemas keep to); tests/test_protocol_schema.py checks, on generated
headers, that nothing the compiled check accepts is rejected by `jsonschema`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from coordinator.protocol.errors import ErrorCode, ProtocolError, quote
from coordinator.resources import protocol_dir

MESSAGE_TYPES = ("hello", "welcome", "train", "evaluate", "result", "error", "heartbeat", "chunk")


@cache
def _registry() -> Registry:
    resources = []
    for path in sorted((protocol_dir() / "schemas").glob("*.schema.json")):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


@cache
def validator(schema_id: str) -> Draft202012Validator:
    schema = _registry()[schema_id].contents
    return Draft202012Validator(schema, registry=_registry())


@cache
def compiled(schema_id: str) -> Callable[[Any], Any] | None:
    """`fastjsonschema`'s check of a schema, or None for one that refers to others (those take `jsonschema`)."""
    schema = dict(_registry()[schema_id].contents)
    if '"$ref":' in json.dumps(schema):
        return None
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    # No defaults written into the header, no format checks: `jsonschema` makes neither.
    check: Callable[[Any], Any] = fastjsonschema.compile(schema, use_default=False, use_formats=False)
    return check


def validate_header(header: dict[str, Any]) -> None:
    """Raise `ProtocolError` unless `header` is valid against its type's schema."""
    kind = header.get("type")
    if kind not in MESSAGE_TYPES:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {quote(kind)}")
    schema_id = f"{kind}.schema.json"
    fast = compiled(schema_id)
    if fast is not None:
        try:
            fast(header)
            return
        except fastjsonschema.JsonSchemaException:
            pass  # jsonschema decides, and says why
    error = next(iter(validator(schema_id).iter_errors(header)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)[:200] or "(header)"
        # jsonschema's message quotes the offending value: cut it, so the peer's bytes are not echoed back.
        reason = error.message if len(error.message) <= 200 else f"{error.message[:199]}…"
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"{kind}: {where}: {reason}")


def validate_model_spec(spec: Any) -> None:
    error = next(iter(validator("model-spec.schema.json").iter_errors(spec)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(spec)"
        raise ValueError(f"invalid model spec at {where}: {error.message}")
