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

from coordinator.protocol import messages as wire
from coordinator.protocol.errors import ErrorCode, ProtocolError
from coordinator.protocol.tensors import Tensors, check_tensors, decode_tensors

# Far beyond any loss, accuracy or duration, yet a million of them still sum to a finite float64.
MAX_METRIC_ABS = 1e30
MAX_METRIC_NAME = 64
MAX_METRICS = 32

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
    n = reply.num_examples
    if not _is_int(n) or not 0 < n <= limits.max_examples:
        shown = _describe(n)
        raise ProtocolError(
            ErrorCode.INVALID_UPDATE, f"num_examples {shown} is not in 1..{limits.max_examples} (the run's cap)"
        )
    _check_metrics(reply.metrics)
    weight = 1 if uniform_weights else n
    if kind == "evaluate":
        missing = {"loss", "accuracy"} - set(reply.metrics)
        if missing or reply.delta:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "an evaluate result carries loss and accuracy, no tensors")
        metrics: dict[str, int | float | list[int] | list[float]] = {
            "num-examples": weight,
            "eval_loss": float(reply.metrics["loss"]),
            "eval_acc": float(reply.metrics["accuracy"]),
        }
        return Accepted(RecordDict({"metrics": MetricRecord(metrics)}))
    delta = decode_tensors(reply.delta)
    check_tensors(delta, shapes)
    norm = l2_norm(delta)
    clipped = limits.clip_norm is not None and norm > limits.clip_norm
    if clipped:
        assert limits.clip_norm is not None
        scale = limits.clip_norm / norm
        delta = {k: (v.astype(np.float64) * scale).astype(np.float32) for k, v in delta.items()}
    weights = {name: global_weights[name] + delta[name] for name in global_weights}
    if not all(np.isfinite(w).all() for w in weights.values()):
        raise ProtocolError(ErrorCode.INVALID_UPDATE, "global + delta overflows float32")
    # Only what the strategy reads: extra keys in some replies would make the key sets differ.
    record = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}),
            "metrics": MetricRecord({"num-examples": weight}),
        }
    )
    return Accepted(record, norm, clipped)


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
