"""The data schema (SPEC §2.3): how every client turns its own data into model input and labels.

The coordinator holds one per run and sends it with every task, so that a clinic's
table is standardised by the run's statistics and its labels numbered by the run's
class list, never by what one client happens to hold. A client's own statistics
would give each client a different input space, and its own class order a different
meaning for output 3.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Kind = Literal["table", "image", "tensor"]
# A number as a table cell writes it; the page's reader (client_web/src/data-schema.js) uses the same pattern.
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
KINDS: tuple[Kind, ...] = ("table", "image", "tensor")


@dataclass(frozen=True)
class DataSchema:
    kind: Kind
    classes: tuple[str, ...] | None = None  # class names in index order; None: a regression
    label: str | None = None  # table: the label column
    features: tuple[str, ...] = ()  # table: the input columns, in input order
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"data schema kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "table":
            if not self.label or not self.features:
                raise ValueError("a table's data schema names its label column and at least one feature")
            if not len(self.mean) == len(self.std) == len(self.features):
                raise ValueError(
                    f"a table's data schema has one mean and one std per feature: {len(self.features)} features,"
                    f" {len(self.mean)} means, {len(self.std)} stds"
                )
            if not all(math.isfinite(m) for m in self.mean) or not all(0 < s < math.inf for s in self.std):
                raise ValueError("a table's means are finite and its stds positive and finite")
            if self.label in self.features:
                raise ValueError(f"the label column {self.label!r} cannot also be a feature")
        elif self.label is not None or self.features or self.mean or self.std:
            raise ValueError(f"only a table's data schema has label, features, mean and std, not {self.kind!r}")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("the class names of a data schema are distinct")

    @property
    def regression(self) -> bool:
        return self.classes is None

    def class_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes or ())}

    def standardize(self, columns: np.ndarray) -> np.ndarray:
        """float32 `[N, features]` raw values to the model's input."""
        mean = np.asarray(self.mean, np.float64)
        std = np.asarray(self.std, np.float64)
        return ((columns - mean) / std).astype(np.float32)

    def check_model(self, input_shape: Sequence[int], num_classes: int, loss: str) -> None:
        """Raise ValueError when this data cannot feed a model of this input and output."""
        if self.kind == "table" and tuple(input_shape) != (len(self.features),):
            raise ValueError(
                f"the table has {len(self.features)} features, but the model's input is {list(input_shape)}:"
                f" a table feeds a model whose input is [{len(self.features)}]"
            )
        if self.kind == "image" and (len(input_shape) != 3 or input_shape[0] not in (1, 3)):
            raise ValueError(f"images feed a model whose input is [1 or 3, H, W], not {list(input_shape)}")
        if self.classes is None and loss != "mse":
            raise ValueError(f"a {loss} model needs class labels, and this data has none (a regression target)")
        if self.classes is not None and loss == "mse":
            raise ValueError("an mse model regresses float targets; this data has class labels")
        binary = loss == "bce_with_logits" and num_classes == 1
        if self.classes is not None and len(self.classes) != (2 if binary else num_classes):
            raise ValueError(f"the data has {len(self.classes)} classes and the model {num_classes} outputs")

    def to_dict(self) -> dict[str, Any]:
        """The wire form (SPEC §2.3)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "table":
            out.update(label=self.label, features=list(self.features), mean=list(self.mean), std=list(self.std))
        if self.classes is not None:
            out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSchema:
        """The schema a task carries. Raises ValueError (naming the reason) for an inconsistent one."""
        classes = data.get("classes")
        return cls(
            kind=data["kind"],
            classes=None if classes is None else tuple(str(c) for c in classes),
            label=data.get("label"),
            features=tuple(data.get("features", ())),
            mean=tuple(float(v) for v in data.get("mean", ())),
            std=tuple(float(v) for v in data.get("std", ())),
        )


def label_name(value: object) -> str:
    """A label's name: `1`, `1.0` and `"1"` are all class "1" (SPEC §2.3)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    return label_name(float(text)) if NUMBER.fullmatch(text) else text
