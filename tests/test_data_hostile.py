"""Whatever a data file holds, reading it ends in a dataset or a DataError naming the file, never
another exception: a participant's spreadsheet is not trusted to be well formed. Under CI=true the
runs are derandomized, as tests/test_protocol_fuzz.py's are, so a failure there reproduces here."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from coordinator.data.dataset import DataError
from coordinator.data.loading import load_dataset
from coordinator.data.schema import DataSchema

CI = os.environ.get("CI") == "true"
SCHEMA = DataSchema("table", ("a", "b"), "y", ("f1", "f2"), (0.0, 1.0), (1.0, 2.0))
CELLS = st.one_of(
    st.sampled_from(["1", "-2.5", "", "nan", "inf", "1e999", "a", "b", '"q,uoted"', "1,2", " 3 ", "\ufeff"]),
    st.text(max_size=6),
    st.floats(allow_nan=True).map(str),
)


@settings(max_examples=300, deadline=None, derandomize=CI, database=None)
@example(header=["f1", "f1", "f2", "y"], rows=[[]])  # found by CI: a repeated column was a KeyError
@given(
    header=st.lists(st.sampled_from(["f1", "f2", "y", "f3", "", "f1"]), min_size=0, max_size=5),
    rows=st.lists(st.lists(CELLS, min_size=0, max_size=5), max_size=6),
)
def test_any_csv_is_read_or_refused_with_a_data_error(header: list[str], rows: list[list[str]]) -> None:
    text = "\n".join(",".join(r) for r in [header, *rows])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "own.csv"
        path.write_text(text)
        try:
            data = load_dataset(path, SCHEMA, (2,))
        except DataError as exc:
            assert str(exc).startswith(str(path))
            return
    assert data.x.shape == (len(data), 2) and np.isfinite(data.x).all()
    assert set(data.y.tolist()) <= {0, 1}


@settings(max_examples=150, deadline=None, derandomize=CI, database=None)
@given(st.binary(max_size=300))
def test_any_bytes_as_npz_or_safetensors_are_read_or_refused_with_a_data_error(blob: bytes) -> None:
    for suffix in (".npz", ".safetensors"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"own{suffix}"
            path.write_bytes(blob)
            try:
                load_dataset(path, DataSchema("tensor", classes=("0", "1")), (2,))
            except DataError as exc:
                assert str(exc).startswith(str(path))


NAMES = st.text(min_size=1, max_size=4)
NUMBERS = st.floats(min_value=-1e30, max_value=1e30, allow_nan=False)
DATA_FIELDS = st.fixed_dictionaries(
    {"kind": st.sampled_from(["table", "image", "tensor"])},
    optional={
        "label": NAMES,
        "features": st.lists(NAMES, min_size=1, max_size=3),
        "mean": st.lists(NUMBERS, max_size=3),
        "std": st.lists(st.floats(min_value=1e-9, max_value=1e30), max_size=3),
        "classes": st.lists(st.text(max_size=3), min_size=1, max_size=3),
    },
)


@settings(max_examples=300, deadline=None, derandomize=CI, database=None)
@given(DATA_FIELDS)
def test_any_data_schema_a_task_may_carry_is_built_or_refused_with_a_value_error(data: dict[str, object]) -> None:
    from coordinator.protocol.schema import validator

    assert validator("data-schema.schema.json").is_valid(data)
    try:
        schema = DataSchema.from_dict(data)
    except ValueError:
        return
    assert DataSchema.from_dict(schema.to_dict()) == schema
