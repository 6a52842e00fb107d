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
place from the received payload, no temporary. Sums are float32, as Flower's own FedAvg.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from scipy.linalg.blas import saxpy

from coordinator.protocol.tensors import Tensors

# The metric a shard record carries besides Flower's weight: how many clients it averages.
CLIENTS_KEY = "num-clients"
WEIGHT_KEY = "num-examples"


class RunningMean:
    """The running example-weighted sum of one phase's deltas. Thread-safe."""

    def __init__(self, global_weights: Mapping[str, np.ndarray]) -> None:
        self._global = global_weights
        self._sums: Tensors = {k: np.zeros(v.size, np.float32) for k, v in global_weights.items()}
        self._scratch: Tensors = {}
        self._lock = threading.Lock()
        self.weight = 0.0
        self.count = 0

    def aligned(self, delta: Mapping[str, np.ndarray]) -> Tensors:
        """`delta` with every tensor 4-byte aligned, as BLAS needs: misaligned ones are copied to scratch space.

        A delta is read in place from the received frame, and where its payload starts depends on the length
        of the frame's header: most arrive misaligned, and BLAS would copy them (into fresh pages) on every
        call. The scratch space is allocated once per phase; replies are taken one at a time, so one suffices.
        """
        out: Tensors = {}
        for name, t in delta.items():
            if t.flags.aligned:
                out[name] = t
                continue
            if name not in self._scratch:
                self._scratch[name] = np.empty(t.shape, np.float32)
            out[name] = self._scratch[name]
            np.copyto(out[name], t)
        return out

    def add(self, delta: Mapping[str, np.ndarray], weight: float, scale: float = 1.0) -> None:
        """Fold `weight · scale · delta` in, counting `weight` (`scale` < 1 clips the delta, not its weight).

        `delta` must hold finite float32 arrays of the global shapes.
        """
        with self._lock:
            for name, acc in self._sums.items():
                if not acc.size:
                    continue  # BLAS refuses empty vectors
                out = saxpy(delta[name].reshape(-1), acc, a=weight * scale)
                assert out is acc  # saxpy works in place on a contiguous float32 accumulator
            self.weight += weight
            self.count += 1

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

        It ends the fold: each sum becomes its mean in place, is handed to Flower (which copies it into
        its own buffer) and is dropped, so that building the record holds one tensor more, not a model.
        """
        with self._lock:
            self._scratch = {}
            scale = np.float32(1.0 / self.weight) if self.count else np.float32(0.0)
            arrays: dict[str, Array] = {}
            for name in list(self._sums):
                acc = self._sums.pop(name)
                acc *= scale
                acc += self._global[name].reshape(-1)
                arrays[name] = Array(acc.reshape(self._global[name].shape))
                del acc
            metrics: dict[str, int | float] = {WEIGHT_KEY: _number(self.weight), CLIENTS_KEY: self.count}
        return RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)})  # type: ignore[arg-type]

    def release(self) -> None:
        """Drop the accumulator (the phase is over)."""
        with self._lock:
            self._sums, self._scratch = {}, {}


def _number(value: float) -> int | float:
    """Integral weights stay ints, as clients' `num_examples` are."""
    return int(value) if float(value).is_integer() else value
