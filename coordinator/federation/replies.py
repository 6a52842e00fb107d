"""Checking one client's reply and turning it into the record a Flower strategy reads.

`check_reply` is a pure function: no threads, no Flower `Message`, no registry. Its
inputs are the task's kind, the client's result, the global weights the task carried
and the shapes the model expects; its output is the strategy's `RecordDict`, or a
`ProtocolError` that says what was wrong. Every reply passes through it, because one
inconsistent reply makes a stock strategy abort the whole run.

Train results carry a delta; strategies (and Flower's DP wrappers, which compute
`reply - global`) expect weights, so the record holds `global + delta`.
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

MAX_NUM_EXAMPLES = 100_000_000

Kind = Literal["train", "evaluate"]


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
    *,
    uniform_weights: bool = False,
) -> RecordDict:
    """The strategy's record for a valid `reply`; raises `ProtocolError` for anything else.

    `uniform_weights` gives every client the weight 1 (Flower's DP accountant needs it)
    instead of its `num_examples`. Key sets are the same for every accepted reply of a
    kind, because strategies abort the run on inconsistent replies.
    """
    if not 0 < reply.num_examples <= MAX_NUM_EXAMPLES:
        raise ProtocolError(ErrorCode.INVALID_UPDATE, f"num_examples {reply.num_examples} is not plausible")
    bad = [k for k, v in reply.metrics.items() if not math.isfinite(v)]
    if bad:
        raise ProtocolError(ErrorCode.INVALID_UPDATE, f"metrics {bad} are not finite")
    weight = 1 if uniform_weights else reply.num_examples
    if kind == "evaluate":
        missing = {"loss", "accuracy"} - set(reply.metrics)
        if missing or reply.delta:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "an evaluate result carries loss and accuracy, no tensors")
        metrics: dict[str, int | float | list[int] | list[float]] = {
            "num-examples": weight,
            "eval_loss": reply.metrics["loss"],
            "eval_acc": reply.metrics["accuracy"],
        }
        return RecordDict({"metrics": MetricRecord(metrics)})
    delta = decode_tensors(reply.delta)
    check_tensors(delta, shapes)
    weights = {name: global_weights[name] + delta[name] for name in global_weights}
    if not all(np.isfinite(w).all() for w in weights.values()):
        raise ProtocolError(ErrorCode.INVALID_UPDATE, "global + delta overflows float32")
    # Only what the strategy reads: extra keys in some replies would make the key sets differ.
    return RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}),
            "metrics": MetricRecord({"num-examples": weight}),
        }
    )
