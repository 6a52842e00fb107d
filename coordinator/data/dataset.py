"""A labelled dataset in the model's terms, and the error a file that cannot become one raises."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DataError(ValueError):
    """A data file that cannot be used: the message names the file, where in it, and what is wrong."""

    def __init__(self, path: object, where: str | None, what: str) -> None:
        super().__init__(f"{path}: {where}: {what}" if where else f"{path}: {what}")


@dataclass(frozen=True)
class Dataset:
    """`x` is the model's input, one example per row: float32 `[N, *input_shape]` (int64 for token ids).

    `y` is int64 `[N]` class indices, or float32 `[N]` targets for a regression.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> Dataset:
        return Dataset(np.ascontiguousarray(self.x[idx]), np.ascontiguousarray(self.y[idx]))

    def holdout(self, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
        """(train, held out): a seeded random `fraction` held out for evaluation; train keeps at least one."""
        if not 0 <= fraction < 1:
            raise ValueError("the held-out fraction is in [0, 1)")
        n_out = min(round(len(self) * fraction), len(self) - 1)
        order = np.random.default_rng(seed).permutation(len(self))
        return self.take(np.sort(order[n_out:])), self.take(np.sort(order[:n_out]))
