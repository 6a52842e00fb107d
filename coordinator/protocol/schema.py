"""Validation of headers against the JSON Schemas in `protocol/schemas/`."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

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


def validate_header(header: dict[str, Any]) -> None:
    kind = header.get("type")
    if kind not in MESSAGE_TYPES:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {quote(kind)}")
    error = next(iter(validator(f"{kind}.schema.json").iter_errors(header)), None)
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
