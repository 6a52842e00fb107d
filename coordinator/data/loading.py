"""Any supported data file or folder, as a run's model sees it, and the schema a reference set implies.

`--data` and `--test-data` take the same things: an `.npz` or `.safetensors` of arrays,
a CSV or Parquet table, or a folder of class subfolders of pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from coordinator.data.arrays import ARRAY_SUFFIXES, array_dataset, read_arrays
from coordinator.data.dataset import DataError, Dataset
from coordinator.data.images import image_classes, image_dataset
from coordinator.data.schema import DataSchema, Kind
from coordinator.data.tables import TABLE_SUFFIXES, describe_table, table_dataset


def data_kind(path: Path) -> Kind:
    """What kind of data a path holds, by its suffix (a folder: pictures)."""
    if path.is_dir():
        return "image"
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return "table"
    if suffix in ARRAY_SUFFIXES:
        return "tensor"
    raise DataError(
        path,
        None,
        "unknown kind of data: a folder of class folders, or a file ending "
        + ", ".join(TABLE_SUFFIXES + ARRAY_SUFFIXES),
    )


def describe(
    path: Path,
    *,
    num_classes: int,
    regression: bool,
    label_column: str | None = None,
    classes: Sequence[str] | None = None,
) -> DataSchema:
    """The run's schema, from the operator's reference data (`--test-data`): a table's statistics and
    the class list (a table's label values, an image folder's subfolders, or 0..K-1 for arrays),
    unless `classes` names them."""
    kind = data_kind(path)
    names = tuple(classes) if classes else None
    if kind == "table":
        if not label_column:
            raise DataError(path, None, "a table needs --label-column: which column holds the label")
        return describe_table(path, label_column, regression=regression, classes=names)
    if label_column:
        raise DataError(path, None, "--label-column is for CSV and Parquet tables")
    if regression:
        if kind == "image":
            raise DataError(path, None, "image folders label pictures by class; a regression needs arrays or a table")
        return DataSchema("tensor")
    if kind == "image":
        return DataSchema("image", classes=names or image_classes(path))
    read_arrays(path)  # a reference file that cannot be read is refused now, not at the first evaluation
    return DataSchema("tensor", classes=names or tuple(str(i) for i in range(max(num_classes, 2))))


def load_dataset(path: Path, schema: DataSchema, input_shape: Sequence[int], input_dtype: str = "float32") -> Dataset:
    """The data at `path`, prepared by `schema` for a model taking `input_shape`."""
    kind = data_kind(path)
    if kind != schema.kind:
        raise DataError(path, None, f"the run's data is of kind {schema.kind!r}, and this is {kind!r}")
    if kind == "table":
        return table_dataset(path, schema)
    if kind == "image":
        return image_dataset(path, schema, input_shape)
    return array_dataset(path, schema, input_shape, input_dtype)


def class_counts(dataset: Dataset, schema: DataSchema) -> dict[str, int]:
    """Examples per class name, for a summary (empty for a regression)."""
    if schema.classes is None:
        return {}
    counts = np.bincount(dataset.y, minlength=len(schema.classes))
    return {name: int(c) for name, c in zip(schema.classes, counts, strict=True)}
