"""`protocol/vectors/data-tables.json` is what the coordinator's table reader prepares (the page's
reader is held to the same file by client_web/test/data-schema.test.js)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from protocol.tools.make_data_vectors import OUT, prepare, refused_line

VECTORS = json.loads(Path(OUT).read_text())


def test_each_valid_table_prepares_to_the_vectors_arrays() -> None:
    for case in VECTORS["valid"]:
        data = prepare(case["schema"], case["csv"])
        assert np.array_equal(data.x.reshape(-1), np.asarray(case["x"], np.float32)), case["name"]
        assert data.y.tolist() == case["y"], case["name"]


def test_each_refused_table_names_the_vectors_line() -> None:
    for case in VECTORS["refused"]:
        assert refused_line(case["schema"], case["csv"]) == case["line"], case["name"]
