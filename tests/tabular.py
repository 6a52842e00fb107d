"""A second real dataset: scikit-learn's bundled breast-cancer table (569 tumours, 30 features), as CSV files.

The label column holds the class names, so the tests go through the run's class list; the split
is stratified and seeded, the same on every machine, and needs no network.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split

from coordinator.data.loading import load_dataset
from coordinator.federation.evaluation import run_data_schema
from coordinator.models.local_training import TrainConfig, train_delta
from coordinator.models.scores import score
from coordinator.models.spec import spec_from_dict
from coordinator.models.torch_model import build_module, load_wire_weights, wire_weights

LABEL = "diagnosis"
SPEC: dict[str, Any] = {
    "name": "tumour-mlp",
    "input_shape": [30],
    "num_classes": 2,
    "layers": [
        {"type": "linear", "in_features": 30, "out_features": 32},
        {"type": "relu"},
        {"type": "linear", "in_features": 32, "out_features": 2},
    ],
}


def write_tables(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """train.csv (80%) and test.csv (20%), stratified; returns their paths."""
    data = load_breast_cancer()
    names = [str(data.target_names[t]) for t in data.target]
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, names, test_size=0.2, random_state=seed, stratify=data.target
    )
    paths = folder / "train.csv", folder / "test.csv"
    for path, x, y in zip(paths, (x_train, x_test), (y_train, y_test), strict=True):
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow([*data.feature_names, LABEL])
            out.writerows([*(repr(float(v)) for v in row), label] for row, label in zip(x, y, strict=True))
    return paths


TARGET = "progression"
REGRESSION_SPEC: dict[str, Any] = {
    "name": "progression-linear",
    "input_shape": [10],
    "num_classes": 1,
    "loss": {"type": "mse"},
    "layers": [{"type": "linear", "in_features": 10, "out_features": 1}],
}


def write_regression_tables(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """scikit-learn's bundled diabetes table (442 patients, 10 features) as train.csv and test.csv, its
    target a year's disease progression / 100: fractional values, which a trainer must not round."""
    data = load_diabetes()
    x_train, x_test, y_train, y_test = train_test_split(data.data, data.target / 100, test_size=0.2, random_state=seed)
    paths = folder / "train.csv", folder / "test.csv"
    for path, x, y in zip(paths, (x_train, x_test), (y_train, y_test), strict=True):
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow([*data.feature_names, TARGET])
            out.writerows([*(repr(float(v)) for v in row), repr(float(t))] for row, t in zip(x, y, strict=True))
    return paths


def centralised_accuracy(train: Path, test: Path, epochs: int, **config: Any) -> float:
    """The same model, from the same initial weights, trained on the pooled training table."""
    spec = spec_from_dict(SPEC)
    schema = run_data_schema(spec, str(test), LABEL, None)
    assert schema is not None
    pooled = load_dataset(train, schema, spec.input_shape)
    held = load_dataset(test, schema, spec.input_shape)
    module = build_module(spec, seed=0)
    weights = wire_weights(module)
    cfg = TrainConfig(local_epochs=epochs, seed=0, **config)
    delta, _ = train_delta(module, weights, pooled.x, pooled.y, cfg)
    load_wire_weights(module, {k: weights[k] + delta[k] for k in weights})
    accuracy = score(module, held.x, held.y)["accuracy"]
    assert math.isfinite(accuracy)
    return float(np.float64(accuracy))
