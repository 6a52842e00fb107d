"""`check_reply`, table-driven: what a reply must be to become a strategy's record, and the error otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save

from coordinator.federation.replies import MAX_NUM_EXAMPLES, Kind, check_reply
from coordinator.protocol import Result, encode_tensors
from coordinator.protocol.errors import ProtocolError
from coordinator.protocol.tensors import Tensors

SHAPES = {"layers.0.weight": (2, 3), "layers.0.bias": (2,)}
GLOBAL: Tensors = {
    "layers.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
    "layers.0.bias": np.array([1.0, 3e38], dtype=np.float32),  # near float32's max
}


def delta(**changes: Any) -> bytes:
    tensors: dict[str, Any] = {name: np.full(shape, 0.5, dtype=np.float32) for name, shape in SHAPES.items()}
    tensors.update(changes)
    return encode_tensors({k: v for k, v in tensors.items() if v is not None})


def train(num_examples: int = 30, metrics: dict[str, float] | None = None, payload: bytes | None = None) -> Result:
    return Result(
        "t1", num_examples, {"train_loss": 0.3} if metrics is None else metrics, delta() if payload is None else payload
    )


def evaluation(metrics: dict[str, float] | None = None, payload: bytes = b"") -> Result:
    return Result("t1", 20, {"loss": 0.2, "accuracy": 0.9} if metrics is None else metrics, payload)


REFUSED: list[tuple[str, Kind, Result, str, str]] = [
    ("zero examples", "train", train(num_examples=0), "invalid_update", "num_examples 0 is not plausible"),
    ("negative examples", "train", train(num_examples=-5), "invalid_update", "not plausible"),
    ("too many examples", "train", train(num_examples=MAX_NUM_EXAMPLES + 1), "invalid_update", "not plausible"),
    (
        "NaN metric",
        "train",
        train(metrics={"train_loss": float("nan")}),
        "invalid_update",
        "['train_loss'] are not finite",
    ),
    (
        "infinite metric",
        "evaluate",
        evaluation({"loss": float("inf"), "accuracy": 1.0}),
        "invalid_update",
        "not finite",
    ),
    (
        "missing tensor",
        "train",
        train(payload=delta(**{"layers.0.bias": None})),
        "invalid_update",
        "missing ['layers.0.bias']",
    ),
    (
        "extra tensor",
        "train",
        train(payload=delta(extra=np.zeros(1, np.float32))),
        "invalid_update",
        "unexpected ['extra']",
    ),
    (
        "wrong shape",
        "train",
        train(payload=delta(**{"layers.0.weight": np.zeros((3, 2), np.float32)})),
        "invalid_update",
        "layers.0.weight: shape [3, 2], expected [2, 3]",
    ),
    (
        "wrong dtype",
        "train",
        train(payload=save({**{n: np.zeros(s, np.float32) for n, s in SHAPES.items()}, "layers.0.bias": np.zeros(2)})),
        "invalid_update",
        "layers.0.bias: dtype float64, expected float32",
    ),
    (
        "NaN in the delta",
        "train",
        train(payload=delta(**{"layers.0.bias": np.array([np.nan, 0], np.float32)})),
        "invalid_update",
        "layers.0.bias",
    ),
    (
        "global + delta overflows",
        "train",
        train(payload=delta(**{"layers.0.bias": np.array([0, 3e38], np.float32)})),
        "invalid_update",
        "overflows float32",
    ),
    ("not safetensors", "train", train(payload=b"\x00" * 9), "invalid_update", "not a valid safetensors file"),
    ("evaluate without accuracy", "evaluate", evaluation({"loss": 0.1}), "invalid_message", "loss and accuracy"),
    ("evaluate with tensors", "evaluate", evaluation(payload=delta()), "invalid_message", "no tensors"),
]


@pytest.mark.parametrize(("kind", "reply", "code", "says"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_bad_replies_are_refused_with_a_precise_error(kind: Kind, reply: Result, code: str, says: str) -> None:
    with pytest.raises(ProtocolError) as info:
        check_reply(kind, reply, GLOBAL, SHAPES)
    assert info.value.code.value == code
    assert says in info.value.message


def test_a_train_result_becomes_global_plus_delta_weighted_by_examples() -> None:
    record = check_reply("train", train(num_examples=30), GLOBAL, SHAPES)
    arrays = record.array_records["arrays"]
    for name, value in GLOBAL.items():
        np.testing.assert_array_equal(arrays[name].numpy(), value + np.float32(0.5))
    assert dict(record.metric_records["metrics"]) == {"num-examples": 30}


def test_uniform_weights_give_every_client_weight_one() -> None:
    record = check_reply("train", train(num_examples=30), GLOBAL, SHAPES, uniform_weights=True)
    assert dict(record.metric_records["metrics"]) == {"num-examples": 1}


def test_an_evaluate_result_becomes_flower_metrics() -> None:
    record = check_reply("evaluate", evaluation(), GLOBAL, SHAPES)
    assert not record.array_records
    assert dict(record.metric_records["metrics"]) == {"num-examples": 20, "eval_loss": 0.2, "eval_acc": 0.9}


def test_accepted_train_records_have_the_same_keys_whatever_the_client_reports() -> None:
    # Strategies abort the run when key sets differ between replies: extra client metrics must not leak in.
    a = check_reply("train", train(metrics={"train_loss": 0.1}), GLOBAL, SHAPES)
    b = check_reply("train", train(metrics={"train_loss": 0.1, "train_seconds": 2.0, "x": 1.0}), GLOBAL, SHAPES)
    assert set(a.metric_records["metrics"]) == set(b.metric_records["metrics"])
    assert set(a.array_records["arrays"]) == set(b.array_records["arrays"]) == set(SHAPES)
