"""What local training optimises with: the optimizer, its learning-rate schedule within a
round, and gradient clipping, checked once. Pure data, so settings and the wire can use it
without torch; `optimizers` turns it into PyTorch's objects.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "exponential", "cosine", "one-cycle", "warmup")


@dataclass(frozen=True)
class OptimizerConfig:
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float | None = None  # None: the optimizer's PyTorch default (AdamW 0.01, else 0)
    lr_schedule: str = "constant"
    lr_step_size: int = 1
    lr_gamma: float | None = None  # step: 0.1 unless given; exponential: required
    lr_warmup_steps: int = 5
    grad_clip_norm: float | None = None

    @classmethod
    def of(cls, source: Any) -> OptimizerConfig:
        """The options of anything that carries them under these names (the run's settings, a task's config)."""
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls)})

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r} ({', '.join(OPTIMIZERS)})")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.lr_schedule!r} ({', '.join(SCHEDULES)})")
        if self.lr_schedule == "exponential" and self.lr_gamma is None:
            raise ValueError("the exponential lr schedule needs lr-gamma")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs the sgd optimizer with momentum > 0")
        if self.lr_step_size < 1 or self.lr_warmup_steps < 1:
            raise ValueError("lr-step-size and lr-warmup-steps must be at least 1")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(f"grad-clip-norm must be positive, got {self.grad_clip_norm}")
