"""The FedAvg family's mean of records: Flower's values, bit for bit, in one model's memory."""

from __future__ import annotations

import tracemalloc

import flwr.serverapp.strategy.fedavg as flower_fedavg
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore.task_identity import TaskIdentity

from coordinator.federation.record_mean import install, mean_of_records
from coordinator.federation.weights import npy_array

SHAPES = {"conv.weight": (8, 1, 3, 3), "conv.bias": (8,), "fc.weight": (10, 72), "empty": (0, 4), "scalar": ()}


def records(
    weights: list[float], seed: int = 0, dtype: type = np.float32, shapes: dict[str, tuple[int, ...]] = SHAPES
) -> list[RecordDict]:
    rng = np.random.default_rng(seed)
    return [
        RecordDict(
            {
                "arrays": ArrayRecord({k: Array(rng.standard_normal(s).astype(dtype)) for k, s in shapes.items()}),
                "metrics": MetricRecord({"num-examples": w}),
            }
        )
        for w in weights
    ]


def same(a: ArrayRecord, b: ArrayRecord) -> None:
    assert list(a) == list(b)
    for key in a:
        assert (a[key].dtype, a[key].shape, a[key].stype) == (b[key].dtype, b[key].shape, b[key].stype), key
        assert a[key].data == b[key].data, key  # the same .npy bytes: the same floats, header included


@pytest.mark.parametrize("weights", [[1], [7], [3, 1], [10, 250, 3, 1, 77], [0.5, 2.25, 1e-3]])
def test_the_mean_is_flowers_bit_for_bit(weights: list[float]) -> None:
    same(mean_of_records(records(weights), "num-examples"), aggregate_arrayrecords(records(weights), "num-examples"))


def test_records_it_cannot_read_in_place_get_flowers_own_mean() -> None:
    doubles = records([2, 5], dtype=np.float64)
    mean = mean_of_records(doubles, "num-examples")
    assert mean["fc.weight"].dtype == "float64"
    same(mean, aggregate_arrayrecords(doubles, "num-examples"))


def test_records_whose_tensors_differ_by_name_get_flowers_own_mean() -> None:
    mixed = records([2, 5])
    extra = mixed[1].array_records["arrays"]
    extra["more"] = Array(np.ones(3, np.float32))
    same(mean_of_records(mixed, "num-examples"), aggregate_arrayrecords(mixed, "num-examples"))


def test_one_record_is_its_own_mean_in_a_new_record() -> None:
    one = records([42])
    mean = mean_of_records(one, "num-examples")
    theirs = one[0].array_records["arrays"]
    assert mean is not theirs  # the grid empties its replies' records once the round is over
    assert all(mean[k].data is theirs[k].data for k in SHAPES)  # the same buffers, no copy


def test_a_record_s_array_is_made_as_flower_makes_it() -> None:
    for t in (np.arange(12, dtype=np.float32).reshape(3, 4), np.zeros((0, 2), np.float32), np.float32(3)):
        ours, flowers = npy_array(np.asarray(t)), Array(np.asarray(t))
        assert (ours.dtype, ours.shape, ours.stype, ours.data) == (flowers.dtype, flowers.shape, flowers.stype,
                                                                   flowers.data)  # fmt: skip
        np.testing.assert_array_equal(ours.numpy(), t)


def test_installed_fedavg_aggregates_through_it_to_the_same_model() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    replies = [Message(content=r, dst_node_id=1, message_type="train") for r in records([3, 9, 4])]
    stock = aggregate_arrayrecords([m.content for m in replies], "num-examples")
    install()
    assert vars(flower_fedavg)["aggregate_arrayrecords"] is mean_of_records
    ours, _ = FedAvg().aggregate_train(1, replies)
    assert ours is not None
    same(ours, stock)


def test_the_mean_holds_one_model_and_a_tensor_not_three_models() -> None:
    big = {"w": (1024, 1024), "b": (1024,)}  # 4 MiB, almost all one tensor: the case Flower copies most
    three = records([1, 2, 3], seed=1, shapes=big)
    model = 4 * (1024 * 1024 + 1024)
    peaks = {}
    for name, fn in (("ours", mean_of_records), ("flower", aggregate_arrayrecords)):
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            result = fn(three, "num-examples")
            peaks[name] = (tracemalloc.get_traced_memory()[1] - before) / model
        finally:
            tracemalloc.stop()
        del result
    # The result itself is a model; the sum being turned into an Array is a tensor more.
    assert peaks["ours"] < 2.05, peaks
    assert peaks["flower"] > 2.9, peaks  # what it replaces: the measure sees the copies it saves
