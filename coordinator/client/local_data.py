"""What a Python client trains and evaluates on: the data it holds, prepared by the run's schema.

`FileData` reads a participant's file or folder (anything `coordinator.data.loading` reads)
the first time a task says how to prepare it: a table needs the run's feature statistics
and class list (SPEC §2.3), which arrive with the task, not before. The prepared split is
kept for the following tasks of the same run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from coordinator.data.dataset import Dataset
from coordinator.data.loading import data_kind, load_dataset
from coordinator.data.partition import partition
from coordinator.data.schema import DataSchema
from coordinator.models.spec import ModelSpec


class ClientData(Protocol):
    def prepare(self, schema: DataSchema | None, spec: ModelSpec) -> tuple[Dataset, Dataset]:
        """(train, evaluate) for a task of this model and data schema; ValueError when they cannot be had."""
        ...


@dataclass
class LocalData:
    """Arrays already in the model's terms (the MNIST demo shards): trained and evaluated on as they are."""

    x: np.ndarray
    y: np.ndarray

    def prepare(self, schema: DataSchema | None, spec: ModelSpec) -> tuple[Dataset, Dataset]:
        data = Dataset(self.x, self.y)
        return data, data


@dataclass
class FileData:
    """Shard `shard` of `of` of the data at `path` (all clients sharing one file split it alike, by `seed`),
    less a `holdout` fraction kept for evaluate tasks (0: evaluate on the training data)."""

    path: Path
    shard: int = 1
    of: int = 1
    scheme: str = "iid"
    seed: int = 0
    holdout: float = 0.1
    _prepared: dict[str, tuple[Dataset, Dataset]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        data_kind(self.path)  # an unknown kind of file is refused before the client connects
        if not 0 <= self.holdout < 1:
            raise ValueError("--holdout is a fraction in [0, 1)")

    def prepare(self, schema: DataSchema | None, spec: ModelSpec) -> tuple[Dataset, Dataset]:
        schema = schema or self._without_schema(spec)
        key = json.dumps([schema.to_dict(), spec.input_shape, spec.input_dtype])
        if key not in self._prepared:
            full, shards = self.split(schema, spec)
            train, held = full.take(shards[self.shard - 1]).holdout(self.holdout, self.seed + self.shard)
            self._prepared = {key: (train, held if len(held) else train)}  # one run's worth, not every run's
        return self._prepared[key]

    def split(self, schema: DataSchema | None, spec: ModelSpec) -> tuple[Dataset, list[np.ndarray]]:
        """The whole file, prepared, and every client's indices into it (`of` of them), from one read."""
        schema = schema or self._without_schema(spec)
        schema.check_model(spec.input_shape, spec.num_classes, spec.loss["type"])
        full = load_dataset(self.path, schema, spec.input_shape, spec.input_dtype)
        return full, partition(full.y, self.of, self.scheme, self.seed)

    def _without_schema(self, spec: ModelSpec) -> DataSchema:
        kind = data_kind(self.path)
        if kind != "tensor":
            raise ValueError(
                f"{self.path} is a {kind}, prepared by the run's feature statistics and class list, and this"
                " coordinator sends none: it needs --test-data (and --label-column for a table)"
            )
        if spec.loss["type"] == "mse":
            return DataSchema("tensor")
        return DataSchema("tensor", classes=tuple(str(i) for i in range(max(spec.num_classes, 2))))
