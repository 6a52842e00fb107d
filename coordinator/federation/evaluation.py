"""Central evaluation: after a round, the global model is scored on the operator's test set.

The test set is `--test-data` (any file or folder `coordinator.data.loading` reads, or
`mnist`, the bundled 2,000 test digits), prepared by the run's data schema. Without
`--test-data`, only the built-in MNIST models are scored, on the bundled digits:
scoring a model of any other task on MNIST would report a number that means nothing.
"""

from __future__ import annotations

from pathlib import Path

from coordinator.data.dataset import Dataset
from coordinator.data.loading import describe, load_dataset
from coordinator.data.mnist import load_split
from coordinator.data.schema import DataSchema
from coordinator.models.scores import score
from coordinator.models.spec import BUILTIN_MODELS, ModelSpec
from coordinator.models.torch_model import build_module, load_wire_weights
from coordinator.protocol.tensors import Tensors

MNIST = "mnist"  # --test-data's name for the bundled MNIST test split


def run_data_schema(
    spec: ModelSpec, test_data: str | None, label_column: str | None, classes: str | None
) -> DataSchema | None:
    """The schema a new run sends its clients, described from its test set; None for MNIST or no test set.

    Raises ValueError (a DataError names the file) when the test set cannot feed the model.
    """
    if test_data is None or test_data == MNIST:
        if label_column or classes:
            raise ValueError("--label-column and --classes describe --test-data, which is not given")
        return None
    schema = describe(
        Path(test_data),
        num_classes=spec.num_classes,
        regression=spec.loss["type"] == "mse",
        label_column=label_column,
        classes=[c.strip() for c in classes.split(",")] if classes else None,
    )
    schema.check_model(spec.input_shape, spec.num_classes, spec.loss["type"])
    return schema


class CentralEvaluation:
    """The run's test set and a module to score weights on it."""

    def __init__(self, spec: ModelSpec, test_data: str | None, schema: DataSchema | None) -> None:
        self.spec = spec
        self.test: Dataset | None = None
        if test_data not in (None, MNIST):
            assert schema is not None, "a run with --test-data has a data schema"
            self.test = load_dataset(Path(str(test_data)), schema, spec.input_shape, spec.input_dtype)
        elif test_data == MNIST or spec.name in BUILTIN_MODELS:
            digits = load_split("test")
            self.test = Dataset(digits.x.reshape(len(digits.x), *spec.input_shape), digits.y)
        self._module = build_module(spec) if self.test is not None else None

    def scores(self, weights: Tensors) -> dict[str, float]:
        """The global model's scores (`coordinator.models.scores`); empty without a test set."""
        if self.test is None or self._module is None:
            return {}
        load_wire_weights(self._module, weights)
        return score(self._module, self.test.x, self.test.y)
