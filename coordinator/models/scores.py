"""Scores of a model on a labelled set, fitting its task.

A classification gets its loss, accuracy and macro-F1 (the unweighted mean of each
class's F1, over the classes that occur in the labels or the predictions, as
scikit-learn computes it): accuracy alone flatters a model that ignores a rare class.
A regression gets its loss, MSE and MAE.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from coordinator.models.losses import spec_loss
from coordinator.models.spec import ModelSpec


@torch.no_grad()
def score(module: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> dict[str, float]:
    """`loss` and, for a classification, `accuracy` and `macro_f1`; for a regression, `mse` and `mae`."""
    spec = getattr(module, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise TypeError("score() needs a module built from a model spec")
    module.eval()
    loss_total, outputs = 0.0, []
    for i in range(0, len(x), batch_size):
        xb, yb = torch.from_numpy(x[i : i + batch_size]), torch.from_numpy(y[i : i + batch_size])
        out = module(xb)
        loss_total += float(spec_loss(spec.loss, out, yb)) * len(xb)
        outputs.append(out.float().numpy())
    out = np.concatenate(outputs)
    scores = {"loss": loss_total / len(x)}
    if spec.loss["type"] == "mse":
        error = out.reshape(len(y), -1) - y.astype(np.float64).reshape(len(y), -1)
        return scores | {"mse": float(np.mean(error**2)), "mae": float(np.mean(np.abs(error)))}
    predicted = (out[:, 0] > 0).astype(np.int64) if out.shape[1] == 1 else out.argmax(1)
    return scores | {"accuracy": float(np.mean(predicted == y)), "macro_f1": macro_f1(y, predicted)}


def macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """The mean over classes seen in either array of 2·TP / (2·TP + FP + FN)."""
    classes = np.union1d(truth, predicted)
    tp = np.array([np.sum((truth == c) & (predicted == c)) for c in classes], np.float64)
    fp = np.array([np.sum((truth != c) & (predicted == c)) for c in classes], np.float64)
    fn = np.array([np.sum((truth == c) & (predicted != c)) for c in classes], np.float64)
    return float(np.mean(2 * tp / (2 * tp + fp + fn)))
