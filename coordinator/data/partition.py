"""Disjoint client shards of a labelled set.

* `iid`: a uniform random split.
* `dirichlet:ALPHA`: label skew, each class spread over clients by Dirichlet(α) (Hsu et al. 2019).
* `shards:S`: the pathological split of McMahan et al. 2017: examples sorted by label, cut
  into S pieces per client, each client taking S random pieces (so about S classes).
"""

from __future__ import annotations

import numpy as np


def parse_partition(text: str) -> tuple[str, float | None]:
    kind, _, value = text.partition(":")
    if text == "iid":
        return "iid", None
    if kind in ("dirichlet", "shards") and value:
        try:
            number = float(value)
        except ValueError:
            number = 0.0
        if kind == "dirichlet" and number > 0:
            return kind, number
        if kind == "shards" and number >= 1 and number.is_integer():
            return kind, number
        raise ValueError(f"{text!r}: dirichlet takes a positive alpha, shards a whole count of 1 or more")
    raise ValueError(f"unknown partition {text!r}: use iid, dirichlet:ALPHA or shards:S")


def partition(labels: np.ndarray, num_shards: int, scheme: str, seed: int) -> list[np.ndarray]:
    """Index arrays, one per shard; together they cover every example exactly once."""
    kind, value = parse_partition(scheme)
    rng = np.random.default_rng(seed)
    if num_shards > len(labels):
        raise ValueError(f"{len(labels)} examples cannot make {num_shards} non-empty shards")
    if kind == "iid":
        return [np.sort(s) for s in np.array_split(rng.permutation(len(labels)), num_shards)]
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{scheme} splits by class, and these labels are regression targets: use iid")
    assert value is not None
    shards: list[list[int]] = [[] for _ in range(num_shards)]
    if kind == "shards":
        order = np.argsort(labels, kind="stable")
        pieces = np.array_split(order, num_shards * int(value))
        for i, piece in enumerate(rng.permutation(len(pieces))):
            shards[i % num_shards].extend(pieces[piece].tolist())
    else:
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            share = rng.dirichlet(np.full(num_shards, value))
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
            for shard, part in zip(shards, np.split(idx, cuts), strict=True):
                shard.extend(part.tolist())
    # A shard left empty by the draw takes one example from the largest, so every client can train.
    for s in shards:
        if not s:
            s.append(max(shards, key=len).pop())
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]
