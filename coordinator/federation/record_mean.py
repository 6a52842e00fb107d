"""Flower's example-weighted mean of `ArrayRecord`s, bit for bit, in one model's memory.

Every FedAvg-family strategy's server step (FedAvg, FedAvgM, FedProx, FedAdam, FedYogi,
FedAdagrad, and the DP wrappers around them) starts from `aggregate_arrayrecords`, the
function `flwr.serverapp.strategy.fedavg` calls. Flower's version deserialises each
tensor (`np.load`, a copy), multiplies it (a second), keeps every weighted sum, and
serialises the results through `np.save` into a `BytesIO` (a third and a fourth for the
largest tensor): about 3 models beyond its inputs, the largest single cost of a streamed
round, whose only input is one shard record.

`mean_of_records` computes the same floats in the same order (each record's tensor times
its `w / Σw` in float32, summed record by record) reading the records' own buffers in
place, and turns each sum into an `Array` as soon as it is done. One record, the streamed
case, has the factor 1.0: its tensors are the mean, and its `Array`s are reused as they
are (they are immutable). Records it cannot read in place (a dtype other than float32, or
another serialisation), or whose tensors differ by name, go to Flower's own function.

`install()` puts it in place of Flower's for the FedAvg family; the robust strategies
(Krum, Bulyan, the median, the trimmed mean) keep their own code.
"""

from __future__ import annotations

import functools
import math
from typing import cast

import flwr.serverapp.strategy.fedavg as flower_fedavg
import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from coordinator.federation.weights import npy_array, npy_float32_view


def mean_of_records(records: list[RecordDict], weighting_metric_name: str) -> ArrayRecord:
    """What Flower's `aggregate_arrayrecords(records, weighting_metric_name)` returns, value for value."""
    weights = [cast(float, _metrics(r)[weighting_metric_name]) for r in records]
    total = sum(weights)
    factors = [w / total for w in weights]
    arrays = [dict(a.items()) for r in records for a in r.array_records.values()]
    views = [{k: _in_place(v) for k, v in one.items()} for one in arrays]
    alike = len(arrays) == len(records) and all(one.keys() == arrays[0].keys() for one in arrays)
    if not alike or any(v is None for one in views for v in one.values()):
        return aggregate_arrayrecords(records, weighting_metric_name)  # whatever Flower makes of those
    if len(arrays) == 1 and factors[0] == 1.0:  # x · 1.0 is x: the one record's tensors are the mean
        return ArrayRecord(arrays[0])
    out: dict[str, Array] = {}
    for key in arrays[0]:
        first = cast(np.ndarray, views[0][key])
        mean = first * factors[0]
        scratch = np.empty_like(mean)
        for one, factor in zip(views[1:], factors[1:], strict=True):
            mean += np.multiply(cast(np.ndarray, one[key]), factor, out=scratch)
        del scratch
        out[key] = npy_array(mean)
        del mean
    return ArrayRecord(out)


@functools.cache
def install() -> None:
    """Make the FedAvg family aggregate with `mean_of_records` (in this process, from now on)."""
    flower_fedavg.aggregate_arrayrecords = mean_of_records  # type: ignore[attr-defined]


def _metrics(record: RecordDict) -> MetricRecord:
    return next(iter(record.metric_records.values()))  # Flower's rule: the first (and only) MetricRecord


def _in_place(array: Array) -> np.ndarray | None:
    """`array`'s float32 data read in place (an empty tensor is a new empty array), or None if it cannot be."""
    if array.dtype == "float32" and not math.prod(array.shape):
        return np.zeros(array.shape, np.float32)
    return npy_float32_view(array)
