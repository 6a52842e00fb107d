"""Local optimizers and learning-rate schedules, as PyTorch's own objects.

The Python client trains with these, and the parity tests use them as the reference the
WebAssembly trainer must match. A schedule runs over one round's local steps (every batch of
every epoch), stepping after each optimizer step as PyTorch's schedulers expect. One-cycle
leaves momentum alone (`cycle_momentum=False`): the browser trainer keeps one momentum.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import lr_scheduler

from coordinator.models.optimization import OptimizerConfig


def make_optimizer(cfg: OptimizerConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """PyTorch's optimizer, with PyTorch's defaults for whatever `cfg` leaves unset."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01 if cfg.weight_decay is None else cfg.weight_decay)
    decay = cfg.weight_decay or 0.0
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=decay)


def make_schedule(
    cfg: OptimizerConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> lr_scheduler.LRScheduler | None:
    """The round's schedule over `total_steps` optimizer steps; `None` for a constant rate."""
    kind = cfg.lr_schedule
    if kind == "step":
        return lr_scheduler.StepLR(optimizer, cfg.lr_step_size, 0.1 if cfg.lr_gamma is None else cfg.lr_gamma)
    if kind == "exponential":
        return lr_scheduler.ExponentialLR(optimizer, float(cfg.lr_gamma or 0.0))
    if kind == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if kind == "one-cycle":
        return lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=max(2, total_steps), cycle_momentum=False)
    if kind == "warmup":
        return lr_scheduler.LinearLR(optimizer, total_iters=cfg.lr_warmup_steps)
    return None
