"""Checking and folding one update, against memory-copy bandwidth measured in the same run.

Each reply is a different received buffer (cold in cache, as in a round), checked by
`check_update` and folded by `RunningMean.add`; once with the tensor data 8-byte aligned in
its frame (as Pollen's encoders lay it out, SPEC §2) and once misaligned by one byte (as any
other encoder may send it). Prints milliseconds per reply and the throughput ÷ np.copyto of
256 MiB.

    python -m bench.aggregation [--model mnist-cnn] [--replies 40]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.scale import copy_bandwidth
from coordinator.federation.aggregation import RunningMean
from coordinator.federation.replies import check_update
from coordinator.models.spec import load_spec
from coordinator.models.torch_model import build_module, wire_weights
from coordinator.protocol import Result, encode_tensors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist-cnn")
    parser.add_argument("--replies", type=int, default=40)
    args = parser.parse_args()
    weights = wire_weights(build_module(load_spec(args.model), 0))
    shapes = {name: t.shape for name, t in weights.items()}
    rng = np.random.default_rng(0)
    payload = encode_tensors({n: (rng.standard_normal(t.shape) * 1e-3).astype(np.float32) for n, t in weights.items()})
    model_bytes = sum(t.nbytes for t in weights.values())
    bandwidth = copy_bandwidth()
    print(f"{args.model}: {model_bytes / 1e6:.2f} MB; memory copy {bandwidth / 1e9:.2f} GB/s")
    for label, offset in (("aligned", 0), ("misaligned", 1)):
        buffers = [memoryview(bytes(offset) + payload)[offset:] for _ in range(args.replies)]
        mean, seconds = RunningMean(weights), 0.0
        for _ in range(3):
            for buffer in buffers:
                started = time.perf_counter()
                update = check_update(Result("t", 10, {}, buffer), shapes)
                mean.add(update.delta, update.weight, update.scale)
                seconds += time.perf_counter() - started
        count = 3 * len(buffers)
        rate = model_bytes * count / seconds
        per_reply = seconds / count * 1e3
        print(f"{label:>10}: {per_reply:.2f} ms per reply, {rate / 1e9:.2f} GB/s = {rate / bandwidth:.2f}× copy")


if __name__ == "__main__":
    main()
