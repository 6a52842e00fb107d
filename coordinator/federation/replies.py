"""Checking one client's reply and turning it into the record a Flower strategy reads.

`check_reply` is a pure function: no threads, no Flower `Message`, no registry. Its
inputs are the task's kind, the client's result, the global weights the task carried,
the shapes the model expects and the run's `ReplyLimits`; its output is an `Accepted`
reply holding the strategy's `RecordDict`, or a `ProtocolError` that says what was
wrong. Every reply passes through it, because one inconsistent reply makes a stock
strategy abort the whole run. It holds on its own, whatever `Nodes` implementation
and whatever JSON parser produced the reply: a header may carry any Python value.

Train results carry a delta; strategies (and Flower's DP wrappers, which compute
`reply - global`) expect weights, so the record holds `global + delta`. When the run
bounds update norms (`--max-update-norm`, or `--dp-clip` under DP) the delta is
clipped to the bound here, before any strategy sees it, so neither the bound nor the
DP guarantee depends on the client having clipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from scipy.linalg.blas import sdot

from coordinator.federation.aggregation import CLIENTS_KEY, aligned_blocks
from coordinator.protocol import messages as wire
from coordinator.protocol.errors import ErrorCode, ProtocolError
from coordinator.protocol.tensors import Tensors, decode_tensors

# Far beyond any loss, accuracy or duration, yet a million of them still sum to a finite float64.
MAX_METRIC_ABS = 1e30
MAX_METRIC_NAME = 64
MAX_METRICS = 32
# Far beyond any honest update, yet 10⁶ clients × 10⁴ examples × this stay far inside float32: no sum of
# bounded deltas can overflow, so no reply needs a second pass to prove that global + delta is finite.
MAX_DELTA_NORM = 1e12
# BLAS sums squares in float32: relative error far below this, so only norms this close to a bound need float64.
_SDOT_ERROR = 1e-4

Kind = Literal["train", "evaluate"]


@dataclass(frozen=True)
class ReplyLimits:
    """What a run accepts from one reply.

    `max_examples`: a `num_examples` above it is refused (a claim no browser shard can
    back is a lie, and FedAvg would give the liar the whole round). `clip_norm`: the
    delta's global L2 norm is scaled down to it when larger; None leaves deltas as sent.
    """

    max_examples: int = 10_000
    clip_norm: float | None = None


DEFAULT_LIMITS = ReplyLimits()


@dataclass(frozen=True)
class Accepted:
    """A reply that passed: the strategy's record, and what the check did to the delta."""

    record: RecordDict
    norm: float | None = None  # the delta's L2 norm as sent (train only)
    clipped: bool = False


@dataclass(frozen=True)
class Lost:
    """The node went away before it answered."""

    reason: str = "client disconnected"


# What can come back for a task: a result, the client's own error, or nothing ever (lost).
Reply = wire.Result | wire.Error | Lost


def check_reply(
    kind: Kind,
    reply: wire.Result,
    global_weights: Tensors,
    shapes: Mapping[str, tuple[int, ...]],
    limits: ReplyLimits = DEFAULT_LIMITS,
    *,
    uniform_weights: bool = False,
) -> Accepted:
    """The strategy's record for a valid `reply`; raises `ProtocolError` for anything else.

    `uniform_weights` gives every client the weight 1 (Flower's DP accountant needs it)
    instead of its `num_examples`. Key sets are the same for every accepted reply of a
    kind, because strategies abort the run on inconsistent replies.
    """
    if kind == "evaluate":
        return Accepted(check_evaluation(reply, limits, uniform_weights=uniform_weights))
    update = check_update(reply, shapes, limits, uniform_weights=uniform_weights)
    # Finite: |delta| ≤ MAX_DELTA_NORM is far below float32's spacing near its maximum, so no sum overflows.
    weights = {name: global_weights[name] + update.scaled(name) for name in global_weights}
    # Only what the strategy reads: extra keys in some replies would make the key sets differ.
    record = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}),
            "metrics": MetricRecord({"num-examples": update.weight, CLIENTS_KEY: 1}),
        }
    )
    return Accepted(record, update.norm, update.clipped)


@dataclass(frozen=True)
class Update:
    """A checked train result: its delta (possibly read-only views into the payload) and how to weigh it."""

    delta: Tensors
    weight: int
    norm: float  # the delta's L2 norm as sent
    scale: float = 1.0  # below 1 when the delta was clipped to the run's bound

    @property
    def clipped(self) -> bool:
        return self.scale < 1.0

    def scaled(self, name: str) -> np.ndarray:
        """One tensor of the delta as it counts: clipped when it was (a new array then, else the view itself)."""
        t = self.delta[name]
        return t if self.scale == 1.0 else (t.astype(np.float64) * self.scale).astype(np.float32)


def check_update(
    reply: wire.Result,
    shapes: Mapping[str, tuple[int, ...]],
    limits: ReplyLimits = DEFAULT_LIMITS,
    *,
    uniform_weights: bool = False,
) -> Update:
    """A train result's delta, checked and measured in one pass; raises `ProtocolError` if it is not valid.

    The pass that measures the norm also finds NaN and infinity (they make it non-finite),
    so a bad update costs no second pass over the payload.
    """
    weight = _check_common(reply, limits, uniform_weights)
    delta = decode_tensors(reply.delta, shapes)
    squares = {name: sum(float(sdot(b, b)) for _, b in aligned_blocks(t)) for name, t in delta.items()}
    norm = math.sqrt(sum(squares.values()))
    if not norm <= MAX_DELTA_NORM:  # also NaN
        worst = next((n for n, v in squares.items() if not math.isfinite(v)), None)
        raise ProtocolError(
            ErrorCode.INVALID_UPDATE,
            f"{worst}: contains NaN or infinity"
            if worst is not None
            else f"the delta's L2 norm is above {MAX_DELTA_NORM:g}: not a training update",
        )
    scale = 1.0
    if limits.clip_norm is not None and norm > limits.clip_norm * (1 - _SDOT_ERROR):
        norm = l2_norm(delta)  # near the bound, float32 sums are not precise enough to decide
        if norm > limits.clip_norm:
            scale = limits.clip_norm / norm
    return Update(delta, weight, norm, scale)


def check_evaluation(
    reply: wire.Result, limits: ReplyLimits = DEFAULT_LIMITS, *, uniform_weights: bool = False
) -> RecordDict:
    """The Flower metrics record of a valid evaluate result; raises `ProtocolError` otherwise."""
    weight = _check_common(reply, limits, uniform_weights)
    missing = {"loss", "accuracy"} - set(reply.metrics)
    if missing or reply.delta:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "an evaluate result carries loss and accuracy, no tensors")
    metrics: dict[str, int | float | list[int] | list[float]] = {
        "num-examples": weight,
        "eval_loss": float(reply.metrics["loss"]),
        "eval_acc": float(reply.metrics["accuracy"]),
    }
    return RecordDict({"metrics": MetricRecord(metrics)})


def _check_common(reply: wire.Result, limits: ReplyLimits, uniform_weights: bool) -> int:
    """Checks `num_examples` and the metrics; returns the reply's weight."""
    n = reply.num_examples
    if not _is_int(n) or not 0 < n <= limits.max_examples:
        shown = _describe(n)
        raise ProtocolError(
            ErrorCode.INVALID_UPDATE, f"num_examples {shown} is not in 1..{limits.max_examples} (the run's cap)"
        )
    _check_metrics(reply.metrics)
    return 1 if uniform_weights else n


def l2_norm(tensors: Tensors) -> float:
    """The global L2 norm of all tensors together, in float64 (inf only if the tensors hold inf)."""
    return math.sqrt(sum(float(np.square(t, dtype=np.float64).sum()) for t in tensors.values()))


def _describe(value: object) -> str:
    """A short rendering of a client's value for an error message (never the whole of a huge value)."""
    if _is_int(value):
        assert isinstance(value, int)
        return str(value) if abs(value) < 10**15 else "a number above 10^15"
    return f"of type {type(value).__name__}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_metrics(metrics: object) -> None:
    """Metrics are a small map of short names to numbers of bounded size: safe to average, store and serve."""
    if not isinstance(metrics, Mapping) or len(metrics) > MAX_METRICS:
        raise ProtocolError(ErrorCode.INVALID_UPDATE, f"metrics must be a map of at most {MAX_METRICS} entries")
    for name, value in metrics.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_METRIC_NAME:
            raise ProtocolError(
                ErrorCode.INVALID_UPDATE, f"metric names are strings of 1..{MAX_METRIC_NAME} characters"
            )
        # int vs float comparison is exact in Python and never overflows, unlike float(400-digit int).
        if not isinstance(value, int | float) or isinstance(value, bool) or not _within(value):
            raise ProtocolError(
                ErrorCode.INVALID_UPDATE, f"metric {name!r} is not a finite number within ±{MAX_METRIC_ABS:g}"
            )


def _within(value: int | float) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return -MAX_METRIC_ABS <= value <= MAX_METRIC_ABS
