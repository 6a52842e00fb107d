"""CSV and Parquet tables: one row per example, numeric feature columns and a label column.

pyarrow reads the file. When it refuses a CSV (a row with too many cells) or a column
is not numeric, Python's csv module reads it again to find the line to name: the error
must point at the row, and pyarrow's message does not always carry it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv
from pyarrow import parquet

from coordinator.data.dataset import DataError, Dataset
from coordinator.data.schema import DataSchema, label_name

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def read_table(path: Path) -> pa.Table:
    """The file's columns. Raises DataError for a file that is not a table."""
    if not path.is_file():
        raise DataError(path, None, "no such file")
    if path.suffix.lower() != ".csv":
        try:
            table = parquet.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(path, None, f"not a Parquet file: {exc}") from None
    else:
        try:
            table = pa_csv.read_csv(path)
        except (pa.ArrowException, UnicodeDecodeError) as exc:
            raise DataError(path, _bad_csv_line(path), f"not a CSV table: {exc}") from None
    seen: set[str] = set()
    for name in table.column_names:
        if name in seen:  # which of the two holds the feature? Neither is safe to guess.
            raise DataError(path, None, f"column {name!r} appears more than once")
        seen.add(name)
    return table


def describe_table(path: Path, label: str, *, regression: bool, classes: Sequence[str] | None = None) -> DataSchema:
    """The schema of the operator's reference table: every other column a feature, its mean and std.

    A constant column gets std 1 (it then enters as 0), not a division by zero.
    """
    table = read_table(path)
    _require(path, table, [label])
    features = [c for c in table.column_names if c != label]
    if not features:
        raise DataError(path, None, f"the table has no feature columns besides the label {label!r}")
    x = _numeric(path, table, features)
    if len(x) == 0:
        raise DataError(path, None, "the table has no rows")
    std = x.std(axis=0)
    names = None if regression else tuple(classes) if classes else _class_names(path, table.column(label))
    return DataSchema(
        kind="table",
        label=label,
        features=tuple(features),
        mean=tuple(float(v) for v in x.mean(axis=0)),
        std=tuple(float(s) if s > 1e-12 else 1.0 for s in std),
        classes=names,
    )


def table_dataset(path: Path, schema: DataSchema) -> Dataset:
    """The table as the run's model sees it: standardised by the schema, labels by its class list."""
    table = read_table(path)
    assert schema.label is not None
    _require(path, table, [*schema.features, schema.label])
    x = schema.standardize(_numeric(path, table, list(schema.features)))
    column = table.column(schema.label)
    if schema.classes is None:
        y = _numeric(path, table, [schema.label]).reshape(-1).astype(np.float32)
    else:
        index = schema.class_index()
        labels = column.to_pylist()
        y = np.empty(len(labels), np.int64)
        for row, value in enumerate(labels):
            got = index.get(label_name(value)) if value is not None else None
            if got is None:
                raise DataError(
                    path, _row(path, row), f"label {value!r} in column {schema.label!r} is not one of the run's"
                    f" classes ({', '.join(schema.classes[:10])}{', …' if len(schema.classes) > 10 else ''})",
                )  # fmt: skip
            y[row] = got
    return Dataset(x, y)


def _require(path: Path, table: pa.Table, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(path, None, f"no column {', '.join(map(repr, missing[:5]))}{more} (it has {_few(table)})")


def _few(table: pa.Table) -> str:
    names = table.column_names
    return ", ".join(map(repr, names[:10])) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _numeric(path: Path, table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """float64 `[rows, columns]`; a missing, non-numeric or non-finite cell is a DataError naming it."""
    out = np.empty((table.num_rows, len(columns)), np.float64)
    for j, name in enumerate(columns):
        column = table.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                or pa.types.is_boolean(column.type) or pa.types.is_null(column.type)):  # fmt: skip
            row = next((i for i, v in enumerate(column.to_pylist()) if v is not None and not _parses(v)), None)
            if row is not None:
                raise DataError(path, _row(path, row), f"column {name!r} holds {column[row].as_py()!r}, not a number")
            column = pc.cast(pc.utf8_trim_whitespace(column), pa.float64())
        if column.null_count:
            row = int(pc.index(pc.is_null(column), True).as_py())
            raise DataError(path, _row(path, row), f"column {name!r} has no value")
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise DataError(path, _row(path, int(bad[0])), f"column {name!r} holds {values[bad[0]]}, not finite")
        out[:, j] = values
    return out


def _class_names(path: Path, column: pa.ChunkedArray) -> tuple[str, ...]:
    values = [v for v in column.to_pylist() if v is not None]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    ordered = sorted(set(values), key=float) if numeric else sorted({label_name(v) for v in values})
    names = tuple(dict.fromkeys(label_name(v) for v in ordered))
    if len(names) < 2:
        raise DataError(path, None, f"a classification needs two or more classes in the label column: {list(names)}")
    return names


def _parses(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _row(path: Path, row: int) -> str:
    """Where data row `row` (0-based) is: a CSV's line (its header is line 1), else a Parquet row."""
    return f"line {row + 2}" if path.suffix.lower() == ".csv" else f"row {row + 1}"


def _bad_csv_line(path: Path) -> str | None:
    """The first line whose cell count differs from the header's, when that is what is wrong."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            for cells in reader:
                if header is not None and cells and len(cells) != len(header):
                    return f"line {reader.line_num} has {len(cells)} cells, the header {len(header)}"
    except (UnicodeDecodeError, csv.Error) as exc:
        return f"near line {getattr(exc, 'line_num', '?')}"
    return None
