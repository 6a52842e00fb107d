"""The coordinator scores the global model on the operator's test set, for any task; the bundled
MNIST digits score only the built-in MNIST models (or a run that names them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from coordinator.client.local_data import FileData
from coordinator.client.worker import TaskWorker
from coordinator.data.dataset import DataError
from coordinator.federation.evaluation import CentralEvaluation, run_data_schema
from coordinator.models.spec import load_spec, spec_from_dict
from coordinator.models.torch_model import build_module, wire_weights
from coordinator.protocol.errors import ErrorCode
from coordinator.protocol.messages import Error, Result, Task
from coordinator.protocol.tensors import encode_tensors

TABLE = "f1,f2,label\n" + "".join(f"{i % 5},{i % 3},{'yes' if i % 2 else 'no'}\n" for i in range(30))
SPEC = {
    "name": "t",
    "input_shape": [2],
    "num_classes": 2,
    "layers": [{"type": "linear", "in_features": 2, "out_features": 2}],
}
REGRESSION = {**SPEC, "num_classes": 1, "loss": {"type": "mse"},
              "layers": [{"type": "linear", "in_features": 2, "out_features": 1}]}  # fmt: skip


def test_only_builtin_mnist_models_are_scored_on_mnist_unless_the_run_asks() -> None:
    mlp = load_spec("mnist-mlp")
    assert set(CentralEvaluation(mlp, None, None).scores(wire_weights(build_module(mlp)))) == {
        "loss", "accuracy", "macro_f1"
    }  # fmt: skip
    lookalike = spec_from_dict({**mlp.raw, "name": "my-digits"})
    weights = wire_weights(build_module(lookalike))
    assert CentralEvaluation(lookalike, None, None).scores(weights) == {}
    assert CentralEvaluation(lookalike, "mnist", None).scores(weights)["accuracy"] > 0


def test_a_table_test_set_gives_the_schema_and_is_scored(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    path.write_text(TABLE)
    spec = spec_from_dict(json.loads(json.dumps(SPEC)))
    schema = run_data_schema(spec, str(path), "label", None)
    assert schema is not None and schema.classes == ("no", "yes") and schema.features == ("f1", "f2")
    scores = CentralEvaluation(spec, str(path), schema).scores(wire_weights(build_module(spec)))
    assert set(scores) == {"loss", "accuracy", "macro_f1"}
    with pytest.raises(ValueError, match="the data has 3 classes and the model 2 outputs"):
        run_data_schema(spec, str(path), "label", "a,b,c")
    with pytest.raises(ValueError, match="describe --test-data, which is not given"):
        run_data_schema(spec, None, "label", None)
    regression = spec_from_dict(json.loads(json.dumps(REGRESSION)))
    path.write_text("f1,f2,target\n1,2,0.5\n2,3,1.5\n")
    schema = run_data_schema(regression, str(path), "target", None)
    assert schema is not None and schema.classes is None
    assert set(CentralEvaluation(regression, str(path), schema).scores(wire_weights(build_module(regression)))) == {
        "loss", "mse", "mae"
    }  # fmt: skip


def task(kind: str, spec: dict[str, object], data: dict[str, object] | None) -> Task:
    weights = encode_tensors(wire_weights(build_module(spec_from_dict(spec))))
    return Task(kind, "t1", "r1", 1, spec, {"local-epochs": 1, "batch-size": 4}, weights, data)


def test_a_python_client_prepares_its_file_by_the_tasks_schema_and_leaves_when_it_cannot(tmp_path: Path) -> None:
    ref, own = tmp_path / "ref.csv", tmp_path / "own.csv"
    ref.write_text(TABLE)
    own.write_text(TABLE)
    spec = spec_from_dict(json.loads(json.dumps(SPEC)))
    schema = run_data_schema(spec, str(ref), "label", None)
    assert schema is not None
    worker = TaskWorker(FileData(own, holdout=0.2))
    trained = worker.answer(task("train", SPEC, schema.to_dict()))
    evaluated = worker.answer(task("evaluate", SPEC, schema.to_dict()))
    assert isinstance(trained, Result) and trained.num_examples == 24, trained
    assert isinstance(evaluated, Result) and evaluated.num_examples == 6 and "accuracy" in evaluated.metrics
    assert worker.unusable is None
    own.write_text(TABLE.replace("2,yes", "2,maybe", 1))
    broken = TaskWorker(FileData(own))
    reply = broken.answer(task("train", SPEC, schema.to_dict()))
    assert isinstance(reply, Error) and reply.code == ErrorCode.TRAINING_FAILED.value
    assert "label 'maybe' in column 'label' is not one of the run's classes" in reply.message
    assert broken.unusable is not None and str(own) in broken.unusable


def test_arrays_train_without_a_schema_by_the_models_classes(tmp_path: Path) -> None:
    path = tmp_path / "own.npz"
    np.savez(path, x=np.ones((10, 2), np.float32), y=np.array([0, 1] * 5))
    reply = TaskWorker(FileData(path, holdout=0)).answer(task("train", SPEC, None))
    assert isinstance(reply, Result) and reply.num_examples == 10
    with pytest.raises(DataError, match="no such file"):
        FileData(tmp_path / "missing.npz").prepare(None, spec_from_dict(json.loads(json.dumps(SPEC))))
