"""Array files: `.npz` or `.safetensors` holding `x` (one example per row) and `y` (labels or targets)."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from pickle import UnpicklingError

import numpy as np
from numpy.lib.npyio import NpzFile
from safetensors import SafetensorError
from safetensors.numpy import load_file

from coordinator.data.dataset import DataError, Dataset
from coordinator.data.schema import DataSchema

ARRAY_SUFFIXES = (".npz", ".safetensors")


def read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The file's `x` and `y`, as stored. Raises DataError for a file without them."""
    if not path.is_file():
        raise DataError(path, None, "no such file")
    try:
        if path.suffix.lower() == ".npz":
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, NpzFile):  # a lone .npy array under an .npz name
                raise ValueError("it holds one array, not named arrays")
            with loaded as f:
                arrays = {k: f[k] for k in f.files if k in ("x", "y")}
        else:
            arrays = {k: v for k, v in load_file(path).items() if k in ("x", "y")}
    except (OSError, ValueError, EOFError, UnpicklingError, zipfile.BadZipFile, SafetensorError) as exc:
        raise DataError(
            path, None, f"not a readable {path.suffix} file of arrays ({exc or type(exc).__name__})"
        ) from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(path, None, f"holds no array {key!r} (it needs x: the inputs, y: the labels)")
    return arrays["x"], arrays["y"]


def array_dataset(path: Path, schema: DataSchema, input_shape: Sequence[int], input_dtype: str) -> Dataset:
    """The arrays checked against the model: x reshaped to `[N, *input_shape]` when only its layout differs."""
    x, y = read_arrays(path)
    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)):
        raise DataError(path, None, f"x ({x.dtype}) and y ({y.dtype}) must be numeric")
    n = len(x) if x.ndim else 0
    if y.ndim != 1 or len(y) != n:
        raise DataError(path, None, f"y has shape {list(y.shape)}; it needs one label per example of x, [{n}]")
    per_example = math.prod(input_shape)
    if x.ndim == 0 or math.prod(x.shape[1:]) != per_example:
        raise DataError(
            path, None, f"x has shape {list(x.shape)}; the model takes [N, {', '.join(map(str, input_shape))}]"
        )
    x = x.reshape(n, *input_shape)
    finite = np.isfinite(x.reshape(n, -1)).all(axis=1) if np.issubdtype(x.dtype, np.floating) else np.ones(n, bool)
    bad = np.flatnonzero(~finite)
    if len(bad):
        raise DataError(path, f"sample {bad[0]}", "x holds a value that is not finite")
    if schema.classes is None:
        if not np.isfinite(y).all():
            raise DataError(path, f"sample {int(np.flatnonzero(~np.isfinite(y))[0])}", "y is not finite")
        return Dataset(x.astype(np.int64 if input_dtype == "int64" else np.float32), y.astype(np.float32))
    wrong = np.flatnonzero((y != np.round(y)) | (y < 0) | (y >= len(schema.classes)))
    if len(wrong):
        raise DataError(
            path, f"sample {wrong[0]}", f"label {y[wrong[0]]} is not a class index 0..{len(schema.classes) - 1}"
        )
    return Dataset(x.astype(np.int64 if input_dtype == "int64" else np.float32), y.astype(np.int64))
