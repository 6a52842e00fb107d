"""The central scores fit the task: accuracy and macro-F1 for a classification, MSE and MAE for a regression."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import f1_score

from coordinator.models.scores import macro_f1, score
from coordinator.models.spec import spec_from_dict
from coordinator.models.torch_model import build_module


def test_macro_f1_matches_scikit_learn_including_classes_only_predicted_or_only_true() -> None:
    rng = np.random.default_rng(0)
    for classes in (2, 3, 10):
        truth, predicted = rng.integers(0, classes, 200), rng.integers(0, classes, 200)
        assert macro_f1(truth, predicted) == f1_score(truth, predicted, average="macro")
    truth, predicted = np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])
    assert macro_f1(truth, predicted) == f1_score(truth, predicted, average="macro")


def test_a_classifier_is_scored_by_accuracy_and_macro_f1() -> None:
    spec = spec_from_dict({"name": "c", "input_shape": [2], "num_classes": 3,
                           "layers": [{"type": "linear", "in_features": 2, "out_features": 3}]})  # fmt: skip
    module = build_module(spec, seed=0)
    x = np.random.default_rng(1).normal(size=(50, 2)).astype(np.float32)
    predicted = module(torch.from_numpy(x)).argmax(1).numpy()
    y = predicted.copy()
    y[:10] = (y[:10] + 1) % 3  # ten wrong
    got = score(module, x, y, batch_size=7)
    assert got["accuracy"] == 0.8 and got["macro_f1"] == f1_score(y, predicted, average="macro")
    assert set(got) == {"loss", "accuracy", "macro_f1"}


def test_a_regression_is_scored_by_mse_and_mae() -> None:
    spec = spec_from_dict({"name": "r", "input_shape": [1], "num_classes": 1, "loss": {"type": "mse"},
                           "layers": [{"type": "linear", "in_features": 1, "out_features": 1}]})  # fmt: skip
    module = build_module(spec, seed=0)
    x = np.arange(6, dtype=np.float32).reshape(6, 1)
    out = module(torch.from_numpy(x)).detach().numpy()[:, 0]
    y = (out + np.array([1, -1, 2, -2, 0, 0])).astype(np.float32)
    got = score(module, x, y)
    assert abs(got["mse"] - 10 / 6) < 1e-5 and abs(got["mae"] - 1.0) < 1e-5 and abs(got["loss"] - 10 / 6) < 1e-5
    assert set(got) == {"loss", "mse", "mae"}
