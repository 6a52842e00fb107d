"""Disjoint client shards of a labelled set: IID, or label skew drawn from Dirichlet(α) (Hsu et al. 2019)."""

from __future__ import annotations

import numpy as np


def parse_partition(text: str) -> tuple[str, float | None]:
    if text == "iid":
        return "iid", None
    if text.startswith("dirichlet:"):
        alpha = float(text.split(":", 1)[1])
        if alpha <= 0:
            raise ValueError("dirichlet alpha must be positive")
        return "dirichlet", alpha
    raise ValueError(f"unknown partition {text!r}: use iid or dirichlet:ALPHA")


def partition(labels: np.ndarray, num_shards: int, scheme: str, seed: int) -> list[np.ndarray]:
    """Index arrays, one per shard; together they cover every example exactly once."""
    kind, alpha = parse_partition(scheme)
    rng = np.random.default_rng(seed)
    if kind == "iid":
        return [np.sort(s) for s in np.array_split(rng.permutation(len(labels)), num_shards)]
    assert alpha is not None
    shards: list[list[int]] = [[] for _ in range(num_shards)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        share = rng.dirichlet(np.full(num_shards, alpha))
        cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
        for shard, part in zip(shards, np.split(idx, cuts), strict=True):
            shard.extend(part.tolist())
    # A shard left empty by the draw takes one example from the largest, so every client can train.
    for s in shards:
        if not s:
            s.append(max(shards, key=len).pop())
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]
