"""Client data files: safetensors with `x` (float32 [N, ...input]) and `y` (int64 [N], or float32 targets).

Non-Python clients (the WASM trainer under Node) cannot reproduce numpy's partition, so
the coordinator side writes each client's shard to a file they read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pyarrow import csv as pa_csv
from safetensors.numpy import save, save_file

from coordinator.data.dataset import Dataset
from coordinator.data.images import labelled_pictures
from coordinator.data.mnist import load_split
from coordinator.data.partition import partition
from coordinator.data.schema import DataSchema
from coordinator.data.tables import read_table


def _shard(shard: int, of: int, scheme: str, seed: int) -> dict[str, np.ndarray]:
    train = load_split("train")
    idx = partition(train.y, of, scheme, seed)[shard - 1]
    return {"x": np.ascontiguousarray(train.x[idx]), "y": train.y[idx].astype(np.int64)}


def write_shard(path: Path, shard: int, of: int, scheme: str = "iid", seed: int = 0) -> int:
    """Write MNIST train shard `shard` (1-based) of `of`; returns its size."""
    tensors = _shard(shard, of, scheme, seed)
    save_file(tensors, str(path))
    return len(tensors["y"])


def shard_bytes(shard: int, of: int, scheme: str = "iid", seed: int = 0) -> bytes:
    """The same shard as safetensors bytes (the page's demo data)."""
    return save(_shard(shard, of, scheme, seed))


def write_dataset(path: Path, data: Dataset) -> None:
    """A prepared dataset (a client's shard of the user's data) as a client data file."""
    save_file({"x": np.ascontiguousarray(data.x), "y": np.ascontiguousarray(data.y)}, str(path))


def write_table_shards(path: Path, shards: Sequence[np.ndarray], out: Path) -> list[Path]:
    """The table's rows as they are in it, one CSV per client (`client-1.csv` ...) holding the rows of
    its indices: what a participant would pick in the page, which prepares it itself."""
    rows = read_table(path)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, idx in enumerate(shards, 1):
        written.append(out / f"client-{k}.csv")
        pa_csv.write_csv(rows.take(idx), written[-1])
    return written


def write_picture_shards(root: Path, schema: DataSchema, shards: Sequence[np.ndarray], out: Path) -> list[Path]:
    """The folder's pictures, one folder per client (`client-1/` ...) holding the pictures of its indices,
    each named `CLASS_N.ext`: what a participant would pick in the page, which labels them by name."""
    pictures = labelled_pictures(root, schema)
    assert schema.classes is not None, "an image schema names its classes"
    written = []
    for k, idx in enumerate(shards, 1):
        folder = out / f"client-{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(idx):
            picture, label = pictures[i]
            (folder / f"{schema.classes[label]}_{n}{picture.suffix}").write_bytes(picture.read_bytes())
        written.append(folder)
    return written
