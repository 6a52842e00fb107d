"""A second real image dataset: scikit-learn's bundled 8×8 handwritten digits (1,797 pictures), written
as folders of PNG files, one per class, the way a participant's photos would sit on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SPEC: dict[str, Any] = {
    "name": "digits-8x8",
    "input_shape": [1, 8, 8],
    "num_classes": 10,
    "layers": [
        {"type": "flatten"},
        {"type": "linear", "in_features": 64, "out_features": 32},
        {"type": "relu"},
        {"type": "linear", "in_features": 32, "out_features": 10},
    ],
}


def write_folders(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """train/ (80%) and test/ (20%), each with one subfolder of PNGs per digit; returns both."""
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    idx_train, idx_test = train_test_split(np.arange(len(images)), test_size=0.2, random_state=seed,
                                           stratify=digits.target)  # fmt: skip
    roots = folder / "train", folder / "test"
    for root, idx in zip(roots, (idx_train, idx_test), strict=True):
        for i in idx:
            (root / str(digits.target[i])).mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").save(root / str(digits.target[i]) / f"{i}.png")
    return roots
