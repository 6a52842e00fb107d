"""The spec's training loss in PyTorch, with PyTorch's own functions and defaults.

Labels arrive as class indices (what every dataset here holds). Cross-entropy takes them as
they are; binary cross-entropy with logits scores each output as its own yes/no, so an index
becomes a one-hot row (or, with one output, the 0/1 target itself); MSE regresses the outputs
on float targets of the output's shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.nn import functional


def spec_loss(loss: Mapping[str, Any], out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean loss of logits `out` `[N, outputs]` against labels or targets `y`, reduced as
    PyTorch's loss modules reduce by default (over every element)."""
    kind = loss["type"]
    if kind == "cross_entropy":
        return functional.cross_entropy(out, y.long(), label_smoothing=float(loss["label_smoothing"]))
    if kind == "bce_with_logits":
        width = out.shape[1]
        target = y.float().reshape(out.shape) if width == 1 else functional.one_hot(y.long(), width).float()
        return functional.binary_cross_entropy_with_logits(out, target)
    if kind == "mse":
        return functional.mse_loss(out, y.float().reshape(out.shape))
    raise ValueError(f"unknown loss {kind!r}")


def correct(loss: Mapping[str, Any], out: torch.Tensor, y: torch.Tensor) -> int | None:
    """How many predictions are right, for a classification loss; `None` for regression."""
    if loss["type"] == "mse":
        return None
    if out.shape[1] == 1:
        return int(((out[:, 0] > 0).long() == y.long()).sum())
    return int((out.argmax(1) == y.long()).sum())
