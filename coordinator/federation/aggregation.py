"""Folding train replies into a running example-weighted sum as they arrive.

FedAvg and every strategy whose server step starts from FedAvg's mean (FedAvgM, FedProx,
FedAdam, FedYogi, FedAdagrad, and DP with fixed clipping) need only

    mean = global + Σ wᵢ·deltaᵢ / Σ wᵢ,

so a round needs one model-sized accumulator, not every client's update. `RunningMean`
keeps that accumulator; the grid folds each checked delta into it the moment it arrives
and drops the reply. At the end of a phase `record()` is the record a Flower strategy
reads for one aggregation shard: the shard's weighted mean and its total weight. FedAvg
over shards weighted by their totals is exactly FedAvg over the clients, so Flower runs
its server step unchanged on it (and a gateway in front of its own clients is a shard too).

The fold is BLAS's `saxpy` (acc ← acc + w·x): one fused pass over the delta, reading it in
place from the received payload (a misaligned one block by block through a buffer that stays
in cache), no model-sized temporary. Sums are float32, as Flower's own FedAvg.

The accumulator's pages are taken when the phase opens, in one call per large tensor
(`resident_zeros`), while clients train: left to the first fold, each page costs a fault there,
on the reply's critical path (6.6 MB of faults for mnist-cnn, as long as ten folds here).

BLAS runs on one thread here. OpenBLAS splits a model-sized saxpy over every core and has the
threads wait on each other; on a server whose cores are also busy with sockets, that made a
mnist-cnn fold 40× slower (8 ms instead of 0.2 ms on two cores) than one thread doing it alone.
"""

from __future__ import annotations

import functools
import mmap
import threading
from collections.abc import Iterator, Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from scipy.linalg.blas import saxpy
from threadpoolctl import threadpool_limits

from coordinator.federation.weights import npy_array
from coordinator.protocol.tensors import Tensors

# The metric a shard record carries besides Flower's weight: how many clients it averages.
CLIENTS_KEY = "num-clients"
WEIGHT_KEY = "num-examples"
BLOCK = 64 * 1024  # values per block of a misaligned delta: 256 KiB, a size that stays in cache
RESIDENT_FROM = 64 * 1024  # values: smaller accumulators come from the allocator, their pages likely resident
_POPULATE: int = getattr(mmap, "MAP_POPULATE", 0)  # Linux only; elsewhere pages come at first touch


class RunningMean:
    """The running example-weighted sum of one phase's deltas. Thread-safe."""

    def __init__(self, global_weights: Mapping[str, np.ndarray]) -> None:
        single_threaded_blas()
        self._global = global_weights
        self._sums: Tensors = {k: resident_zeros(v.size) for k, v in global_weights.items()}
        self._lock = threading.Lock()
        self.weight = 0.0
        self.count = 0

    def add(self, delta: Mapping[str, np.ndarray], weight: float, scale: float = 1.0) -> None:
        """Fold `weight · scale · delta` in, counting `weight` (`scale` < 1 clips the delta, not its weight).

        `delta` must hold finite float32 arrays of the global shapes.
        """
        with self._lock:
            for name, acc in self._sums.items():
                for part, block in aligned_blocks(delta[name]):
                    target = acc[part]
                    out = saxpy(block, target, a=weight * scale)
                    assert out is target  # saxpy works in place on a contiguous float32 accumulator
            self.weight += weight
            self.count += 1

    def merge(self, sums: Mapping[str, np.ndarray], weight: float, count: int) -> None:
        """Fold in another fold's `take` (a gateway's shard): the sum of sums is the sum over all clients."""
        with self._lock:
            for name, acc in self._sums.items():
                for part, block in aligned_blocks(sums[name]):
                    saxpy(block, acc[part], a=1.0)
            self.weight += weight
            self.count += count

    def take(self) -> tuple[Tensors, float, int]:
        """End the fold and hand over its raw sums (flat float32), total weight and count, for `merge` elsewhere."""
        with self._lock:
            sums, self._sums = self._sums, {}
            return sums, self.weight, self.count

    def mean(self) -> Tensors:
        """global + Σ w·delta / Σ w, in float32 (the global weights if nothing was folded)."""
        with self._lock:
            if not self.count:
                return {k: np.array(v, np.float32) for k, v in self._global.items()}
            scale = np.float32(1.0 / self.weight)
            return {
                k: (self._global[k].reshape(-1) + self._sums[k] * scale).reshape(self._global[k].shape)
                for k in self._sums
            }

    def record(self) -> RecordDict:
        """The shard's record for a Flower strategy: its weighted mean, total weight and client count.

        It ends the fold: each sum becomes its mean in place, is copied into its `Array` and is dropped,
        so that building the record holds one tensor more, not a model.
        """
        with self._lock:
            scale = np.float32(1.0 / self.weight) if self.count else np.float32(0.0)
            arrays: dict[str, Array] = {}
            for name in list(self._sums):
                acc = self._sums.pop(name)
                acc *= scale
                acc += self._global[name].reshape(-1)
                arrays[name] = npy_array(acc.reshape(self._global[name].shape))
                del acc
            metrics: dict[str, int | float] = {WEIGHT_KEY: _number(self.weight), CLIENTS_KEY: self.count}
        return RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)})  # type: ignore[arg-type]

    def release(self) -> None:
        """Drop the accumulator (the phase is over)."""
        with self._lock:
            self._sums = {}


@functools.cache
def single_threaded_blas() -> threadpool_limits:
    """Limit this process's BLAS libraries to one thread, once, for good (see the module's docstring)."""
    return threadpool_limits(limits=1, user_api="blas")


def resident_zeros(size: int) -> np.ndarray:
    """`size` float32 zeros whose pages are all taken now; a large array gets a mapping of its own, given
    back to the system when the array and its views are dropped."""
    if size < RESIDENT_FROM:
        return np.zeros(size, np.float32)
    memory = mmap.mmap(-1, 4 * size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _POPULATE)
    return np.frombuffer(memory, np.float32)


def aligned_blocks(t: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """`t` flattened, as (where, values) pieces that BLAS can read in place: 4-byte aligned float32.

    A delta is read in place from the received frame, and where its payload starts depends on the length
    of the frame's header: most arrive misaligned, and BLAS would copy each one whole, into fresh pages.
    A misaligned tensor comes instead in blocks of `BLOCK` values, each copied into one small buffer that
    stays in cache, so checking and folding an update never holds a second copy of it. Empty tensors
    yield nothing (BLAS refuses empty vectors).
    """
    flat = t.reshape(-1)
    if not flat.size:
        return
    if flat.flags.aligned:
        yield slice(None), flat
        return
    scratch = np.empty(min(BLOCK, flat.size), np.float32)
    for start in range(0, flat.size, BLOCK):
        part = slice(start, min(start + BLOCK, flat.size))
        block = scratch[: part.stop - start]
        np.copyto(block, flat[part])
        yield part, block


def _number(value: float) -> int | float:
    """Integral weights stay ints, as clients' `num_examples` are."""
    return int(value) if float(value).is_integer() else value
