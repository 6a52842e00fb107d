"""The bounds every decoder enforces on what a peer sends (SPEC §1.1), and the bounded JSON reader.

A header is attacker-controlled until proven otherwise, so sizes are checked while
parsing, before any value reaches code that could overflow, recurse or allocate
in proportion to a number the peer chose.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from coordinator.protocol.errors import ErrorCode, ProtocolError, quote

MAX_HEADER_BYTES = 64 * 1024
MAX_SAFE_INTEGER = 2**53 - 1  # the largest integer every JSON reader (JavaScript's included) holds exactly
MAX_ERROR_MESSAGE_CHARS = 1024  # error.schema.json's `message` maxLength
MAX_RESUME_IDS = 8  # hello.schema.json's `resume` maxItems, and welcome.schema.json's `resumed`


@dataclass(frozen=True)
class JsonLimits:
    max_string_chars: int = 4096
    max_key_chars: int = 256
    max_array_items: int = 1024
    max_object_keys: int = 256
    max_depth: int = 16


HEADER_LIMITS = JsonLimits()
CANONICAL_EXPONENT_FROM = 1e21  # RFC 8785 (as ECMAScript) writes numbers this large with an exponent


_SAFE_DIGITS = len(str(MAX_SAFE_INTEGER))


def _parse_int(token: str) -> int:
    # Refuse by length first: int() on thousands of digits costs time, and CPython refuses over 4300 with ValueError.
    # (Called for every integer of every header: one int() and no string copies.)
    if len(token) <= _SAFE_DIGITS or len(token) - (token[0] == "-") <= _SAFE_DIGITS:
        value = int(token)
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
    raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"integer {quote(token)} is outside ±(2^53 − 1)")


def _parse_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"number {quote(token)} does not fit a finite double")
    if MAX_SAFE_INTEGER < abs(value) < CANONICAL_EXPONENT_FROM:
        # Every double this large is whole, and RFC 8785 writes it as an integer literal, which the
        # integer bound refuses: accepted here, it could not be sent on (SPEC §1.1).
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"number {quote(token)} is a whole number outside ±(2^53 − 1)")
    return value


def _parse_constant(token: str) -> Any:
    raise ProtocolError(ErrorCode.BAD_FRAME, f"{token} is not JSON")


def _check_shape(value: Any, limits: JsonLimits) -> None:
    # json.loads makes exactly these types (no subclasses), so `type(...) is` decides; numbers, booleans
    # and null need no check and are never pushed. This runs on every header a peer sends.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        kind = type(node)
        if kind is str:
            if len(node) > limits.max_string_chars:
                raise ProtocolError(
                    ErrorCode.INVALID_MESSAGE, f"a string of {len(node)} characters exceeds {limits.max_string_chars}"
                )
            continue
        if kind is not list and kind is not dict:
            continue
        if depth > limits.max_depth:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"JSON nested deeper than {limits.max_depth} levels")
        if kind is list:
            if len(node) > limits.max_array_items:
                raise ProtocolError(
                    ErrorCode.INVALID_MESSAGE, f"an array of {len(node)} items exceeds {limits.max_array_items}"
                )
            stack.extend((item, depth + 1) for item in node if type(item) in _CONTAINERS)
            continue
        if len(node) > limits.max_object_keys:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, f"an object of {len(node)} keys exceeds {limits.max_object_keys}"
            )
        for key, item in node.items():
            if len(key) > limits.max_key_chars:
                raise ProtocolError(
                    ErrorCode.INVALID_MESSAGE, f"key {quote(key)} is longer than {limits.max_key_chars} characters"
                )
            if type(item) in _CONTAINERS:
                stack.append((item, depth + 1))


_CONTAINERS = frozenset({str, list, dict})  # what `_check_shape` looks into


def load_json(text: str, limits: JsonLimits = HEADER_LIMITS) -> Any:
    """Parse JSON within `limits`; any violation, or text that is not JSON, raises ProtocolError.

    Integers must lie within ±(2^53 − 1) and every number must be a finite double;
    the tokens NaN and Infinity, which Python's json accepts, are not JSON and are refused.
    """
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"not JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"JSON nested deeper than {limits.max_depth} levels") from None
    _check_shape(value, limits)
    return value
