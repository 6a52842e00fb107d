"""Local training and evaluation in PyTorch: the Python client's trainer and the coordinator's evaluator."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from coordinator.models import step_memory
from coordinator.models.augmentation import Augmentation
from coordinator.models.augmenters import augment_images, mixup
from coordinator.models.losses import correct, spec_loss
from coordinator.models.optimization import OptimizerConfig
from coordinator.models.optimizers import make_optimizer, make_schedule
from coordinator.models.spec import ModelSpec
from coordinator.models.torch_model import load_wire_weights, wire_weights

BatchCallback = Callable[[int, int, float], None]
AUGMENT_STREAM = 0x9E3779B97F4A7C15  # XORed into a job's seed for its augmentation draws


@dataclass(frozen=True)
class TrainConfig:
    local_epochs: int = 5
    batch_size: int | str = 10  # or "auto": the largest that fits memory_budget_mb (see `step_memory`)
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float | None = None
    proximal_mu: float = 0.0
    clipping_norm: float | None = None
    seed: int | None = None
    nesterov: bool = False
    lr_schedule: str = "constant"
    lr_step_size: int = 1
    lr_gamma: float | None = None
    lr_warmup_steps: int = 5
    grad_clip_norm: float | None = None
    augment_crop: int = 0
    augment_flip: bool = False
    augment_rotate: float = 0.0
    augment_brightness: float = 0.0
    augment_contrast: float = 0.0
    augment_mixup: float = 0.0
    memory_budget_mb: float | None = None  # for batch_size "auto"; None: the page's default budget

    @classmethod
    def from_wire(cls, config: Mapping[str, Any]) -> TrainConfig:
        """The task's config keys (SPEC §5), each with its default when absent."""

        def opt(key: str, kind: type) -> Any:
            value = config.get(key)
            return None if value is None else kind(value)

        batch = config.get("batch-size", cls.batch_size)
        budget = opt("memory-budget-mb", float)
        if batch != "auto" and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
            raise ValueError(f'batch-size must be a positive integer or "auto", got {batch!r}')
        if batch != "auto" and budget is not None:
            raise ValueError('memory-budget-mb is for batch-size "auto"')
        return cls(
            local_epochs=int(config.get("local-epochs", cls.local_epochs)),
            batch_size=batch if batch == "auto" else int(batch),
            memory_budget_mb=budget,
            lr=float(config.get("lr", cls.lr)),
            optimizer=str(config.get("optimizer", cls.optimizer)),
            momentum=float(config.get("momentum", cls.momentum)),
            weight_decay=opt("weight-decay", float),
            proximal_mu=float(config.get("proximal-mu", cls.proximal_mu)),
            clipping_norm=opt("clipping_norm", float),
            seed=opt("seed", int),
            nesterov=bool(config.get("nesterov", False)),
            lr_schedule=str(config.get("lr-schedule", cls.lr_schedule)),
            lr_step_size=int(config.get("lr-step-size", cls.lr_step_size)),
            lr_gamma=opt("lr-gamma", float),
            lr_warmup_steps=int(config.get("lr-warmup-steps", cls.lr_warmup_steps)),
            grad_clip_norm=opt("grad-clip-norm", float),
            augment_crop=int(config.get("augment-crop", 0)),
            augment_flip=bool(config.get("augment-flip", False)),
            augment_rotate=float(config.get("augment-rotate", 0.0)),
            augment_brightness=float(config.get("augment-brightness", 0.0)),
            augment_contrast=float(config.get("augment-contrast", 0.0)),
            augment_mixup=float(config.get("augment-mixup", 0.0)),
        )

    def optimization(self) -> OptimizerConfig:
        return OptimizerConfig.of(self)

    def batch_for(self, spec: ModelSpec, examples: int) -> int:
        """The batch size to train `examples` at: the task's, or for "auto" the one its memory budget fits."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        budget = step_memory.budget_bytes(self.memory_budget_mb or step_memory.DEFAULT_MEMORY_BUDGET_MB)
        slots = step_memory.state_slots(self.optimizer, self.momentum)
        return step_memory.largest_batch(spec, slots, budget, examples)

    def augmentation(self) -> Augmentation:
        return Augmentation.of(self)


def clip_delta(delta: dict[str, np.ndarray], max_norm: float) -> tuple[dict[str, np.ndarray], bool]:
    """Scale the whole delta so its global L2 norm is at most `max_norm` (Flower's fixed clipping)."""
    norm = math.sqrt(sum(float(np.square(d, dtype=np.float64).sum()) for d in delta.values()))
    if norm <= max_norm:
        return delta, False
    scale = max_norm / norm
    return {k: (d * scale).astype(np.float32) for k, d in delta.items()}, True


def train_delta(
    module: nn.Module,
    global_weights: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    on_batch: BatchCallback | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Train from the global weights; return (trained − global, metrics)."""
    spec = getattr(module, "spec", None)
    if not isinstance(spec, ModelSpec) and cfg.batch_size == "auto":
        raise ValueError('batch-size "auto" needs a model built from a spec, to estimate its memory')
    batch_size = cfg.batch_for(spec, len(x)) if isinstance(spec, ModelSpec) else int(cfg.batch_size)
    load_wire_weights(module, global_weights)
    start = {k: v.detach().clone() for k, v in module.named_parameters()}
    optimization = cfg.optimization()
    optimizer = make_optimizer(optimization, module.parameters())
    schedule = make_schedule(optimization, optimizer, cfg.local_epochs * math.ceil(len(x) / batch_size))
    seed = cfg.seed if cfg.seed is not None else int(torch.seed() % 2**63)
    generator = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    augmentation = cfg.augmentation()
    if augmentation.on and (xt.dim() != 4 or not xt.is_floating_point()):
        raise ValueError(f"augmentation is for image inputs [C, H, W]; this model's input is {list(x.shape[1:])}")
    # Its own stream, so turning augmentation on does not change a seeded job's batch order.
    augmenting = torch.Generator().manual_seed((seed ^ AUGMENT_STREAM) % 2**63)
    objective = _objective(module)
    module.train()
    total_loss, seen = 0.0, 0
    for epoch in range(cfg.local_epochs):
        order = torch.randperm(len(xt), generator=generator)
        for b, i in enumerate(range(0, len(order), batch_size)):
            idx = order[i : i + batch_size]
            optimizer.zero_grad()
            xb, yb = xt[idx], yt[idx]
            mixed = None
            if augmentation.on:
                xb = augment_images(augmentation, xb, augmenting)
                mixed = mixup(augmentation, xb, augmenting)
            if mixed is None:
                loss = spec_loss(objective, module(xb), yb)
            else:
                xb, lam, partner = mixed
                out = module(xb)
                loss = lam * spec_loss(objective, out, yb) + (1 - lam) * spec_loss(objective, out, yb[partner])
            if cfg.proximal_mu > 0:
                prox = sum(((p - start[n]) ** 2).sum() for n, p in module.named_parameters())
                loss = loss + cfg.proximal_mu / 2 * prox
            loss.backward()  # type: ignore[no-untyped-call]
            if cfg.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip_norm)
            optimizer.step()
            if schedule is not None:
                schedule.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss became {value} in epoch {epoch + 1}, batch {b + 1}")
            total_loss += value * len(idx)
            seen += len(idx)
            if on_batch is not None:
                on_batch(epoch, b, value)
    trained = wire_weights(module)
    delta = {k: (trained[k] - np.asarray(global_weights[k], dtype=np.float32)) for k in trained}
    metrics = {"train_loss": total_loss / max(seen, 1)}
    if cfg.clipping_norm is not None:
        delta, clipped = clip_delta(delta, cfg.clipping_norm)
        metrics["norm_bit"] = float(clipped)
    return delta, metrics


def _objective(module: nn.Module) -> dict[str, Any]:
    spec = getattr(module, "spec", None)
    return spec.loss if isinstance(spec, ModelSpec) else {"type": "cross_entropy", "label_smoothing": 0.0}


@torch.no_grad()
def evaluate(module: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> tuple[float, float]:
    """The spec's mean loss, and accuracy (NaN for a regression, which has none)."""
    module.eval()
    objective = _objective(module)
    loss, right = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = torch.from_numpy(x[i : i + batch_size]), torch.from_numpy(y[i : i + batch_size])
        out = module(xb)
        loss += float(spec_loss(objective, out, yb)) * len(xb)
        hits = correct(objective, out, yb)
        right = -1 if hits is None or right < 0 else right + hits
    return loss / len(x), math.nan if right < 0 else right / len(x)
