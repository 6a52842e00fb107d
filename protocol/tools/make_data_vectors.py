"""Regenerate `vectors/data-tables.json`: CSV tables and data schemas (SPEC §2.3), with the model
input and labels every implementation must prepare from them, or the line it must refuse.

Expected arrays come from the coordinator's reader (coordinator/data/tables.py), so the page's
reader (client_web/src/data-schema.js) is held to it. Run from the repo root:
    PYTHONPATH=. .venv/bin/python protocol/tools/make_data_vectors.py
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from coordinator.data.dataset import DataError
from coordinator.data.schema import DataSchema
from coordinator.data.tables import table_dataset
from protocol.tools.make_vectors import TABLE_DATA

OUT = Path(__file__).resolve().parents[1] / "vectors" / "data-tables.json"

TUMOURS: dict[str, Any] = TABLE_DATA  # the frame vectors' table schema
DIGITS = {"kind": "table", "label": "y", "features": ["a"], "mean": [0.5], "std": [0.25], "classes": ["0", "1", "2"]}
PRICES = {"kind": "table", "label": "price", "features": ["rooms", "area"], "mean": [3, 80.5], "std": [1.5, 30]}

VALID = [
    # Columns in another order than the schema's, and one the schema does not use.
    ("columns-by-name", TUMOURS, "mean radius,notes,diagnosis,age\n12.5,x,benign,40\n20.25,y,malignant,71.5\n"),
    ("numeric-labels-by-name", DIGITS, "a,y\n0.1,0\n0.2,1.0\n0.7,2\n-3e-1,1\n"),
    (
        "quoted-cells",
        {**TUMOURS, "features": ["age", "size, mm"]},
        'age,"size, mm",diagnosis\n"33","4.5",malignant\n 61 , 1e1 ,benign\n',
    ),
    ("regression", PRICES, "rooms,area,price\n2,55.5,120000\n5,140,310000.5\n"),
]
REFUSED = [
    ("not-a-number", TUMOURS, "age,mean radius,diagnosis\n40,12.5,benign\n41,n/a,benign\n"),
    ("missing-value", TUMOURS, "age,mean radius,diagnosis\n40,12.5,benign\n,11,malignant\n"),
    ("ragged-row", TUMOURS, "age,mean radius,diagnosis\n40,12.5,benign\n41,11,benign\n42,10,benign,extra\n"),
    ("unknown-label", DIGITS, "a,y\n0.1,3\n0.2,1\n"),
    ("label-not-whole", DIGITS, "a,y\n0.1,1\n0.2,1.5\n"),
]


def prepare(schema: dict[str, Any], text: str) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_text(text)
        return table_dataset(path, DataSchema.from_dict(schema))


def refused_line(schema: dict[str, Any], text: str) -> int:
    try:
        prepare(schema, text)
    except DataError as exc:
        found = re.search(r"line (\d+)", str(exc))
        assert found, exc
        return int(found.group(1))
    raise AssertionError("expected a refusal")


def main() -> None:
    valid = []
    for name, schema, text in VALID:
        data = prepare(schema, text)
        valid.append({"name": name, "schema": schema, "csv": text,
                      "x": [float(v) for v in data.x.reshape(-1)], "y": [v.item() for v in data.y]})  # fmt: skip
    refused = [{"name": n, "schema": s, "csv": t, "line": refused_line(s, t)} for n, s, t in REFUSED]
    OUT.write_text(json.dumps({"valid": valid, "refused": refused}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
