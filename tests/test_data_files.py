"""Users' data files: tables, image folders and arrays become the model's input by the run's schema,
and a malformed file is refused with an error naming the file, where in it, and what is wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from pyarrow import parquet

from coordinator.client.local_data import FileData
from coordinator.data.dataset import DataError
from coordinator.data.loading import class_counts, describe, load_dataset
from coordinator.data.schema import DataSchema
from coordinator.models.spec import spec_from_dict

TABLE = "age,size,label\n50,1.5,benign\n60,2.5,malignant\n70,3.5,benign\n40,0.5,malignant\n"


def table_schema(path: Path) -> DataSchema:
    return describe(path, num_classes=2, regression=False, label_column="label")


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_table_is_standardised_by_the_reference_statistics_not_its_own(tmp_path: Path) -> None:
    schema = table_schema(write(tmp_path, TABLE))
    assert schema.features == ("age", "size") and schema.classes == ("benign", "malignant")
    assert schema.mean == pytest.approx((55.0, 2.0)) and schema.std == pytest.approx(
        (np.std([50, 60, 70, 40]), 1.118034)
    )
    # A client's own table, with other values: it is standardised by the reference's mean and std.
    own = load_dataset(write(tmp_path, "label,size,age\nmalignant,2.0,55\n", "own.csv"), schema, (2,))
    assert own.x.tolist() == [[0.0, 0.0]] and own.y.tolist() == [1]


def test_numeric_labels_name_their_classes_in_numeric_order(tmp_path: Path) -> None:
    schema = table_schema(write(tmp_path, "f,label\n1,10\n2,9\n3,10.0\n"))
    assert schema.classes == ("9", "10")
    assert load_dataset(write(tmp_path, "f,label\n1,10.0\n", "c.csv"), schema, (1,)).y.tolist() == [1]


def test_a_parquet_table_reads_like_the_csv(tmp_path: Path) -> None:
    csv_path = write(tmp_path, TABLE)
    pq_path = tmp_path / "t.parquet"
    parquet.write_table(pa.table({"age": [50, 60, 70, 40], "size": [1.5, 2.5, 3.5, 0.5],
                                  "label": ["benign", "malignant", "benign", "malignant"]}), pq_path)  # fmt: skip
    schema = table_schema(csv_path)
    assert table_schema(pq_path) == schema
    a, b = load_dataset(csv_path, schema, (2,)), load_dataset(pq_path, schema, (2,))
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert class_counts(a, schema) == {"benign": 2, "malignant": 2}


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("age,size,label\n50,1.5,benign\n60,oops,malignant\n", "line 3", "column 'size' holds 'oops', not a number"),
        ("age,size,label\n50,1.5,benign\n60,,malignant\n", "line 3", "column 'size' has no value"),
        ("age,size,label\n50,1.5,benign\n60,2.5,malignant,9\n", "line 3 has 4 cells, the header 3", "not a CSV"),
        ("age,size,label\n50,1.5,benign\n60,2.5,unknown\n", "line 3", "label 'unknown' in column 'label' is not"),
        ("age,size,label\n50,1.5,benign\n60,inf,malignant\n", "line 3", "column 'size' holds inf, not finite"),
        ("age,label\n50,benign\n", None, "no column 'size'"),
        ("age,size,size,label\n50,1.5,2,benign\n", None, "column 'size' appears more than once"),
    ],
)
def test_a_malformed_table_is_refused_naming_the_file_line_and_fault(
    tmp_path: Path, text: str, where: str | None, what: str
) -> None:
    schema = table_schema(write(tmp_path, TABLE, "ref.csv"))
    bad = write(tmp_path, text, "bad.csv")
    with pytest.raises(DataError) as err:
        load_dataset(bad, schema, (2,))
    assert str(err.value).startswith(f"{bad}: ") and what in str(err.value)
    if where is not None:
        assert where in str(err.value)


def test_a_reference_table_without_a_label_column_or_a_second_class_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, TABLE)
    with pytest.raises(DataError, match="needs --label-column"):
        describe(path, num_classes=2, regression=False)
    with pytest.raises(DataError, match="two or more classes"):
        table_schema(write(tmp_path, "f,label\n1,a\n2,a\n", "one.csv"))


def picture(path: Path, value: int, size: tuple[int, int] = (8, 6), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, (value, value, value) if mode == "RGB" else value).save(path)


def test_an_image_folder_becomes_the_models_input_labelled_by_its_class_folders(tmp_path: Path) -> None:
    picture(tmp_path / "cat" / "a.png", 255)
    picture(tmp_path / "dog" / "b.jpg", 0)
    picture(tmp_path / "dog" / "c.png", 51, mode="L")
    (tmp_path / "dog" / "notes.txt").write_text("not a picture, and not one by its name either")
    schema = describe(tmp_path, num_classes=2, regression=False)
    assert schema == DataSchema("image", classes=("cat", "dog"))
    grey = load_dataset(tmp_path, schema, (1, 4, 4))
    assert grey.x.shape == (3, 1, 4, 4) and grey.y.tolist() == [0, 1, 1]
    assert grey.x[0].min() == pytest.approx(1.0) and grey.x[2].max() == pytest.approx(0.2)
    assert load_dataset(tmp_path, schema, (3, 5, 7)).x.shape == (3, 3, 5, 7)


def test_a_broken_picture_or_a_foreign_class_folder_is_refused_by_name(tmp_path: Path) -> None:
    picture(tmp_path / "cat" / "a.png", 255)
    picture(tmp_path / "dog" / "b.png", 0)
    schema = describe(tmp_path, num_classes=2, regression=False)
    broken = tmp_path / "dog" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=re.escape(f"{broken}: not a readable picture")):
        load_dataset(tmp_path, schema, (1, 4, 4))
    broken.unlink()
    picture(tmp_path / "cow" / "c.png", 9)
    with pytest.raises(DataError, match="folder 'cow' is not one of the run's classes"):
        load_dataset(tmp_path, schema, (1, 4, 4))


def test_arrays_are_reshaped_to_the_input_and_checked_sample_by_sample(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    x = np.random.default_rng(0).random((5, 28, 28), np.float32)
    np.savez(path, x=x, y=np.array([0, 1, 2, 3, 9]))
    schema = describe(path, num_classes=10, regression=False)
    data = load_dataset(path, schema, (1, 28, 28))
    assert data.x.shape == (5, 1, 28, 28) and data.y.dtype == np.int64
    x[3, 4, 5] = np.nan
    np.savez(path, x=x, y=np.array([0, 1, 2, 3, 9]))
    with pytest.raises(DataError, match=re.escape(f"{path}: sample 3: x holds a value that is not finite")):
        load_dataset(path, schema, (1, 28, 28))
    np.savez(path, x=np.zeros((2, 784), np.float32), y=np.array([0, 10]))
    with pytest.raises(DataError, match=r"sample 1: label 10 is not a class index 0\.\.9"):
        load_dataset(path, schema, (1, 28, 28))
    np.savez(path, x=np.zeros((2, 783), np.float32), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"x has shape \[2, 783\]; the model takes \[N, 1, 28, 28\]"):
        load_dataset(path, schema, (1, 28, 28))
    np.savez(path, x=np.zeros((2, 784), np.float32))
    with pytest.raises(DataError, match="holds no array 'y'"):
        load_dataset(path, schema, (1, 28, 28))
    path.write_bytes(b"PK not a zip")
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable .npz")):
        load_dataset(path, schema, (1, 28, 28))


def test_a_schema_that_contradicts_itself_or_the_model_is_refused() -> None:
    with pytest.raises(ValueError, match="one mean and one std per feature"):
        DataSchema.from_dict({"kind": "table", "label": "y", "features": ["a", "b"], "mean": [0], "std": [1, 1]})
    with pytest.raises(ValueError, match="only a table's data schema has label"):
        DataSchema.from_dict({"kind": "image", "label": "y"})
    table = DataSchema("table", ("a", "b"), "y", ("f",), (0.0,), (1.0,))
    with pytest.raises(ValueError, match="the table has 1 features, but the model's input is"):
        table.check_model((2,), 2, "cross_entropy")
    with pytest.raises(ValueError, match="the data has 2 classes and the model 3 outputs"):
        table.check_model((1,), 3, "cross_entropy")
    table.check_model((1,), 1, "bce_with_logits")  # one logit scores two classes
    assert DataSchema.from_dict(table.to_dict()) == table


SPEC = {
    "name": "t",
    "input_shape": [2],
    "num_classes": 2,
    "layers": [{"type": "linear", "in_features": 2, "out_features": 2}],
}


def test_a_clients_file_is_sharded_alike_everywhere_and_holds_out_its_evaluation_split(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i % 7},{'ab'[i % 2]}\n" for i in range(40))
    path = write(tmp_path, "age,size,label\n" + rows)
    schema, spec = table_schema(path), spec_from_dict(json.loads(json.dumps(SPEC)))
    shards = [FileData(path, k, 4, "iid", seed=3, holdout=0.25).prepare(schema, spec) for k in (1, 2, 3, 4)]
    assert all(len(train) == 8 and len(held) == 2 for train, held in shards)
    seen = np.concatenate([np.concatenate([t.x[:, 0], h.x[:, 0]]) for t, h in shards])
    assert len(np.unique(seen)) == 40  # disjoint, and together the whole table
    again = FileData(path, 2, 4, "iid", seed=3, holdout=0.25).prepare(schema, spec)
    assert np.array_equal(again[0].x, shards[1][0].x) and np.array_equal(again[1].y, shards[1][1].y)


def test_a_table_without_the_runs_schema_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = write(tmp_path, TABLE)
    with pytest.raises(ValueError, match="needs --test-data"):
        FileData(path).prepare(None, spec_from_dict(json.loads(json.dumps(SPEC))))
    with pytest.raises(DataError, match="unknown kind of data"):
        FileData(tmp_path / "x.json")
