"""Image augmentation in PyTorch, as the WebAssembly trainer does it (client_wasm/src/augment.rs): random
crop with zero padding, horizontal flip, small rotation, brightness and contrast jitter, and mixup, on
image batches `[N, C, H, W]`. Draws come from the job's generator, so a seeded job augments the same way
every time. Values are not clamped: an image input may be standardised.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from coordinator.models.augmentation import Augmentation


def augment_images(aug: Augmentation, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A transformed copy of the batch `[N, C, H, W]`."""
    n = len(x)

    def uniform() -> torch.Tensor:
        return torch.rand(n, generator=generator, dtype=torch.float64)

    if aug.crop:
        p = aug.crop
        shifts = torch.randint(-p, p + 1, (n, 2), generator=generator)
        padded = functional.pad(x, (p, p, p, p))
        h, w = x.shape[2:]
        x = torch.stack([padded[i, :, p + dy : p + dy + h, p + dx : p + dx + w]
                         for i, (dy, dx) in enumerate(shifts.tolist())])  # fmt: skip
    if aug.flip:
        mirror = uniform() < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    if aug.rotate:
        angle = torch.deg2rad((uniform() * 2 - 1) * aug.rotate)
        cos, sin = torch.cos(angle), torch.sin(angle)
        h, w = x.shape[2:]
        # affine_grid works in [-1, 1] coordinates: turning about the centre in pixels needs the aspect.
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 1] = cos, sin * (h - 1) / max(w - 1, 1)
        theta[:, 1, 0], theta[:, 1, 1] = -sin * (w - 1) / max(h - 1, 1), cos
        grid = functional.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
        x = functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if aug.brightness:
        x = x + ((uniform() * 2 - 1) * aug.brightness).to(x.dtype)[:, None, None, None]
    if aug.contrast:
        factor = (1 + (uniform() * 2 - 1) * aug.contrast).to(x.dtype)[:, None, None, None]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = mean + factor * (x - mean)
    return x


def mixup(
    aug: Augmentation, x: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, float, torch.Tensor] | None:
    """Mixup (Zhang et al. 2018): (mixed batch, λ, each example's partner index), or None when off."""
    if not aug.mixup or len(x) < 2:
        return None
    a, b = torch._standard_gamma(torch.full((2,), aug.mixup, dtype=torch.float64), generator=generator)
    lam = float(a / (a + b))  # Beta(α, α) from two Gamma(α) draws
    partner = torch.randperm(len(x), generator=generator)
    return lam * x + (1 - lam) * x[partner], lam, partner
