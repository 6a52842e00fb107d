"""The bundled MNIST split and client partitions."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.data.mnist import load_split
from coordinator.data.partition import partition


def test_fixed_split_sizes_and_ranges() -> None:
    train, test = load_split("train"), load_split("test")
    assert train.x.shape == (8000, 1, 28, 28) and test.x.shape == (2000, 1, 28, 28)
    assert train.x.dtype == np.float32 and train.x.min() >= 0 and train.x.max() <= 1
    assert set(np.unique(train.y)) == set(range(10))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet:0.5", "dirichlet:0.05"])
def test_partitions_are_disjoint_and_cover_everything(scheme: str) -> None:
    labels = load_split("train").y
    shards = partition(labels, 10, scheme, seed=3)
    joined = np.concatenate(shards)
    assert len(joined) == len(labels) == len(np.unique(joined))
    assert all(len(s) > 0 for s in shards)
    assert [s.tolist() for s in shards] == [s.tolist() for s in partition(labels, 10, scheme, seed=3)]


def test_dirichlet_skews_labels() -> None:
    labels = load_split("train").y
    iid = partition(labels, 10, "iid", 0)
    skewed = partition(labels, 10, "dirichlet:0.1", 0)

    def spread(shards: list[np.ndarray]) -> float:
        return float(np.mean([np.bincount(labels[s], minlength=10).max() / len(s) for s in shards]))

    assert spread(skewed) > 2 * spread(iid)


def test_unknown_partition_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown partition"):
        partition(np.zeros(10), 2, "shards", 0)


def test_shards_give_each_client_about_s_classes() -> None:
    labels = load_split("train").y
    shards = partition(labels, 10, "shards:2", seed=1)
    joined = np.concatenate(shards)
    assert len(joined) == len(labels) == len(np.unique(joined))
    assert all(len(np.unique(labels[s])) <= 4 for s in shards)  # two label-sorted pieces, each 1-2 classes
    assert np.mean([len(np.unique(labels[s])) for s in shards]) < 3.5


def test_class_skewed_partitions_refuse_regression_targets() -> None:
    with pytest.raises(ValueError, match="regression targets: use iid"):
        partition(np.linspace(0, 1, 20, dtype=np.float32), 2, "dirichlet:0.5", 0)
    assert sum(len(s) for s in partition(np.linspace(0, 1, 20, dtype=np.float32), 2, "iid", 0)) == 20
