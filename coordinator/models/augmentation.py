"""Image augmentation settings (SPEC §5 `augment-*`), checked, with no torch: the run's settings and a
task's training config both hold one. `augmenters` applies them in PyTorch, as client_wasm/src/augment.rs
does in the WebAssembly trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Augmentation:
    crop: int = 0  # shift by up to this many pixels each way, filling with 0
    flip: bool = False  # mirror left to right with probability 1/2
    rotate: float = 0.0  # turn by an angle uniform in ±this many degrees (bilinear, 0 fill)
    brightness: float = 0.0  # add one value uniform in ±this to each example
    contrast: float = 0.0  # scale each example's distance from its mean by a factor in 1 ± this
    mixup: float = 0.0  # mixup's α: λ ~ Beta(α, α) per batch (0: off)

    @classmethod
    def of(cls, source: Any) -> Augmentation:
        """The settings of anything that carries them as `augment_<name>` (the run's settings, a task's config)."""
        return cls(**{f.name: getattr(source, f"augment_{f.name}") for f in fields(cls)})

    def __post_init__(self) -> None:
        fine = (0 <= self.crop <= 64 and 0 <= self.rotate <= 180 and 0 <= self.brightness <= 1
                and 0 <= self.contrast < 1 and 0 <= self.mixup < math.inf)  # fmt: skip
        if not fine:
            raise ValueError(
                "augmentation: augment-crop 0..64, augment-rotate 0..180 degrees, augment-brightness 0..1,"
                " augment-contrast in [0, 1), augment-mixup at least 0"
            )

    @property
    def on(self) -> bool:
        return self != Augmentation()
