"""`check_reply`, table-driven: what a reply must be to become a strategy's record, and the error otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save

from coordinator.federation.replies import MAX_METRIC_ABS, MAX_METRIC_NAME, Kind, ReplyLimits, check_reply, l2_norm
from coordinator.protocol import Result, encode_tensors
from coordinator.protocol.errors import ProtocolError
from coordinator.protocol.tensors import Tensors

SHAPES = {"layers.0.weight": (2, 3), "layers.0.bias": (2,)}
GLOBAL: Tensors = {
    "layers.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
    "layers.0.bias": np.array([1.0, 3e38], dtype=np.float32),  # near float32's max
}
ZERO: Tensors = {name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()}


def delta(**changes: Any) -> bytes:
    tensors: dict[str, Any] = {name: np.full(shape, 0.5, dtype=np.float32) for name, shape in SHAPES.items()}
    tensors.update(changes)
    return encode_tensors({k: v for k, v in tensors.items() if v is not None})


def train(num_examples: Any = 30, metrics: dict[Any, Any] | None = None, payload: bytes | None = None) -> Result:
    return Result(
        "t1", num_examples, {"train_loss": 0.3} if metrics is None else metrics, delta() if payload is None else payload
    )


def evaluation(metrics: dict[Any, Any] | None = None, payload: bytes = b"") -> Result:
    return Result("t1", 20, {"loss": 0.2, "accuracy": 0.9} if metrics is None else metrics, payload)


REFUSED: list[tuple[str, Kind, Result, str, str]] = [
    ("zero examples", "train", train(num_examples=0), "invalid_update", "num_examples 0 is not in 1..10000"),
    ("negative examples", "train", train(num_examples=-5), "invalid_update", "not in 1..10000"),
    ("examples above the cap", "train", train(num_examples=10_001), "invalid_update", "10001 is not in 1..10000"),
    ("10^9 examples", "train", train(num_examples=10**9), "invalid_update", "not in 1..10000 (the run's cap)"),
    ("a 400-digit count", "evaluate", Result("t1", 10**400, {}, b""), "invalid_update", "10^15"),
    ("examples as a float", "train", train(num_examples=30.0), "invalid_update", "of type float"),
    ("examples as a bool", "train", train(num_examples=True), "invalid_update", "of type bool"),
    ("NaN metric", "train", train(metrics={"train_loss": float("nan")}), "invalid_update", "'train_loss' is not"),
    ("infinite metric", "evaluate", evaluation({"loss": float("inf"), "accuracy": 1.0}), "invalid_update", "'loss'"),
    ("400-digit integer metric", "train", train(metrics={"train_loss": 10**400}), "invalid_update", "within ±1e+30"),
    ("huge finite metric", "train", train(metrics={"train_loss": 1.7e308}), "invalid_update", "'train_loss' is not"),
    ("metric above the bound", "train", train(metrics={"x": MAX_METRIC_ABS * 1.01}), "invalid_update", "'x' is not"),
    ("metric below the bound", "train", train(metrics={"x": -(10**31)}), "invalid_update", "'x' is not"),
    ("string metric", "train", train(metrics={"train_loss": "0.3"}), "invalid_update", "'train_loss' is not"),
    ("bool metric", "train", train(metrics={"ok": True}), "invalid_update", "'ok' is not"),
    ("nested metric", "train", train(metrics={"m": [1.0]}), "invalid_update", "'m' is not"),
    ("long metric name", "train", train(metrics={"x" * 65: 1.0}), "invalid_update", "1..64 characters"),
    ("empty metric name", "train", train(metrics={"": 1.0}), "invalid_update", "1..64 characters"),
    ("non-string metric name", "train", train(metrics={7: 1.0}), "invalid_update", "1..64 characters"),
    ("too many metrics", "train", train(metrics={f"m{i}": 1.0 for i in range(33)}), "invalid_update", "at most 32"),
    (
        "metrics not a map",
        "train",
        train(metrics=[1.0]),  # type: ignore[arg-type]
        "invalid_update",
        "a map",
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
        "layers.0.bias: contains NaN or infinity",  # its square overflows: caught in the one pass
    ),
    (
        "a finite delta beyond any update",
        "train",
        train(payload=delta(**{"layers.0.bias": np.array([0, 1e13], np.float32)})),
        "invalid_update",
        "L2 norm is above 1e+12",
    ),
    ("not safetensors", "train", train(payload=b"\x00" * 9), "invalid_update", "not a valid safetensors file"),
    ("evaluate without accuracy", "evaluate", evaluation({"loss": 0.1}), "invalid_message", "loss and accuracy"),
    ("evaluate with tensors", "evaluate", evaluation(payload=delta()), "invalid_message", "no tensors"),
]


@pytest.mark.parametrize(("kind", "reply", "code", "says"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_bad_replies_are_refused_with_a_precise_error(kind: Kind, reply: Result, code: str, says: str) -> None:
    with pytest.raises(ProtocolError) as info:
        check_reply(kind, reply, GLOBAL, SHAPES)
    assert len(info.value.message) < 200
    assert info.value.code.value == code
    assert says in info.value.message


def test_a_train_result_becomes_global_plus_delta_weighted_by_examples() -> None:
    record = check_reply("train", train(num_examples=30), GLOBAL, SHAPES).record
    arrays = record.array_records["arrays"]
    for name, value in GLOBAL.items():
        np.testing.assert_array_equal(arrays[name].numpy(), value + np.float32(0.5))
    assert dict(record.metric_records["metrics"]) == {"num-examples": 30, "num-clients": 1}


def test_uniform_weights_give_every_client_weight_one() -> None:
    record = check_reply("train", train(num_examples=30), GLOBAL, SHAPES, uniform_weights=True).record
    assert dict(record.metric_records["metrics"]) == {"num-examples": 1, "num-clients": 1}


def test_an_evaluate_result_becomes_flower_metrics() -> None:
    record = check_reply("evaluate", evaluation(), GLOBAL, SHAPES).record
    assert not record.array_records
    assert dict(record.metric_records["metrics"]) == {"num-examples": 20, "eval_loss": 0.2, "eval_acc": 0.9}


def test_accepted_train_records_have_the_same_keys_whatever_the_client_reports() -> None:
    # Strategies abort the run when key sets differ between replies: extra client metrics must not leak in.
    a = check_reply("train", train(metrics={"train_loss": 0.1}), GLOBAL, SHAPES).record
    b = check_reply("train", train(metrics={"train_loss": 0.1, "train_seconds": 2.0, "x": 1.0}), GLOBAL, SHAPES).record
    assert set(a.metric_records["metrics"]) == set(b.metric_records["metrics"])
    assert set(a.array_records["arrays"]) == set(b.array_records["arrays"]) == set(SHAPES)


ACCEPTED_METRICS = [
    {"train_loss": MAX_METRIC_ABS, "x": -MAX_METRIC_ABS},
    {"train_loss": 10**30, "count": 3},
    {"m" * MAX_METRIC_NAME: 0.0},
    {f"m{i}": 1.0 for i in range(32)},
]


@pytest.mark.parametrize("metrics", ACCEPTED_METRICS, ids=["at the bound", "big int", "longest name", "32 metrics"])
def test_metrics_within_the_bounds_are_accepted(metrics: dict[str, float]) -> None:
    assert check_reply("train", train(metrics=metrics), GLOBAL, SHAPES).record.array_records


def test_the_examples_cap_is_the_runs_setting() -> None:
    assert check_reply("train", train(num_examples=50_000), GLOBAL, SHAPES, ReplyLimits(max_examples=50_000))
    with pytest.raises(ProtocolError, match=r"31 is not in 1\.\.30"):
        check_reply("train", train(num_examples=31), GLOBAL, SHAPES, ReplyLimits(max_examples=30))


def test_a_delta_above_the_norm_bound_is_clipped_to_it_before_the_strategy_sees_it() -> None:
    big = {name: np.full(shape, 100.0, np.float32) for name, shape in SHAPES.items()}
    sent = l2_norm(big)
    accepted = check_reply("train", train(payload=encode_tensors(big)), ZERO, SHAPES, ReplyLimits(clip_norm=2.0))
    arrays = accepted.record.array_records["arrays"]
    applied = {name: arrays[name].numpy() - ZERO[name] for name in SHAPES}
    assert accepted.clipped and accepted.norm == pytest.approx(sent)
    assert l2_norm(applied) == pytest.approx(2.0, rel=1e-6)
    for name in SHAPES:  # same direction, only shorter
        np.testing.assert_allclose(applied[name], big[name] * (2.0 / sent), rtol=1e-6)


def test_a_delta_within_the_norm_bound_is_left_as_sent() -> None:
    accepted = check_reply("train", train(), ZERO, SHAPES, ReplyLimits(clip_norm=100.0))
    arrays = accepted.record.array_records["arrays"]
    assert not accepted.clipped and accepted.norm == pytest.approx(0.5 * 8**0.5)
    for name in SHAPES:
        np.testing.assert_array_equal(arrays[name].numpy(), np.full(SHAPES[name], 0.5, np.float32))
