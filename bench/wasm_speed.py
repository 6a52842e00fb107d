"""Local training speed of the WebAssembly trainer (CPU backend, under Node and in Chromium) against PyTorch.

Same model, weights, data, batch size and optimizer (SGD), one epoch each, at each of --batches;
all timings exclude start-up and come from this one run on this machine. Each job first trains
untimed epochs, at least one and for at least 3 s (`train-once.mjs --warmup`; `--cold`: none): V8
runs a module's code unoptimised until it is hot and then compiles it in the background, which at
mnist-mlp's small batches made a first epoch up to 3x slower, and in Chromium kept the epoch after a
first mnist-cnn one at 0.7x on two threads; a participant trains many.
Each figure is the best of --repeat runs, interleaved, because a shared machine's speed drifts.
The WASM trainer runs on one thread and on N threads (the threaded build, N = this machine's
cores), under Node and in headless Chromium (the page's builds, `train-once.mjs --runtime
chromium`, in a worker when threaded); PyTorch at 1 and N threads. Where the engine has relaxed
SIMD, the page and Node run builds with its fused multiply-add: the threaded build's variant, and
on one thread the CPU-only relaxed build ("1t relaxed"). "1t" is the single-threaded build without
it, what engines lacking relaxed SIMD run, and "chromium Nt / 1t relaxed" is what threads alone gain.
Prints samples/s, the ratios WASM / PyTorch at 1 and at N threads, each WASM runtime's N-thread
speed over its 1-thread speed, and the size of the optimised .wasm (raw and gzip). It also prints
the arithmetic rate each contender reached, in GFLOP/s: samples/s × the floating-point operations
of one training step per sample (the matrix products and convolutions, forward and backward, as
`torch.utils.flop_counter` counts them; elementwise work is not counted), which says how far each
is from what its machine's vector units can do. `--json-out` also writes the figures as
`{model: {batch: {wasm_1t, wasm_1t_relaxed, wasm_nt, wasm_chromium_1t, wasm_chromium_1t_relaxed,
wasm_chromium_nt, torch_1t, torch_nt, flop_per_sample}}}` in samples/s (`wasm_*` under Node unless named) and FLOP.

    python -m bench.wasm_speed [--samples-mlp 4000] [--samples-cnn 500] [--batches 10 32 128] [--repeat 3] [--cold]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from safetensors.numpy import save_file
from torch.nn import functional
from torch.utils.flop_counter import FlopCounterMode

from coordinator.data.mnist import load_split
from coordinator.models.spec import load_spec
from coordinator.models.torch_model import build_module, wire_weights

ROOT = Path(__file__).resolve().parents[1]
WASM = ROOT / "client_wasm" / "pkg" / "web" / "pollen_trainer_bg.wasm"
WASM_RELAXED = ROOT / "client_wasm" / "pkg" / "web-relaxed" / "pollen_trainer_bg.wasm"
WASM_THREADS = ROOT / "client_wasm" / "pkg" / "web-threads" / "pollen_trainer_bg.wasm"
WASM_THREADS_RELAXED = ROOT / "client_wasm" / "pkg" / "web-threads-relaxed" / "pollen_trainer_bg.wasm"


def torch_speed(
    model: str, x: np.ndarray, y: np.ndarray, threads: int, batch: int, device: str = "cpu", warmup: bool = False
) -> float:
    """Samples/s of one SGD epoch in PyTorch; `warmup` trains one untimed epoch first (CUDA's kernels)."""
    torch.set_num_threads(threads)
    module = build_module(load_spec(model), seed=0).to(device)
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    module.train()

    def epoch() -> None:
        for i in range(0, len(x), batch):
            opt.zero_grad()
            functional.cross_entropy(module(xt[i : i + batch]), yt[i : i + batch]).backward()
            opt.step()
        if device != "cpu":
            torch.cuda.synchronize()

    if warmup:
        epoch()
    start = time.perf_counter()
    epoch()
    return len(x) / (time.perf_counter() - start)


def train_flops(model: str, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    """Floating-point operations per sample of one SGD step, counted on a batch of `batch` (torch's count:
    products and convolutions, which scale with the samples)."""
    module = build_module(load_spec(model), seed=0)
    xt, yt = torch.from_numpy(x[:batch]), torch.from_numpy(y[:batch])
    with FlopCounterMode(display=False) as counter:
        functional.cross_entropy(module(xt), yt).backward()
    return float(counter.get_total_flops()) / len(xt)


def run_train_once(tmp: Path, *options: str, out: str = "delta.safetensors") -> subprocess.CompletedProcess[str]:
    """train-once.mjs in a fresh Node process on tmp's job (`write_job`), writing its delta to tmp/`out`."""
    files = [
        "--spec",
        str(tmp / "spec.json"),
        "--weights",
        str(tmp / "w.safetensors"),
        "--data",
        str(tmp / "d.safetensors"),
    ]
    return subprocess.run(
        ["node", str(ROOT / "client_web" / "bin" / "train-once.mjs"), *files, *options, "--out", str(tmp / out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def train_once(tmp: Path, batch: int, *options: str) -> dict[str, float]:
    """One epoch of the WASM trainer on tmp's job; its report (samplesPerSecond, wasmBytes, ...).
    Raises CalledProcessError (with train-once's stderr) when the job fails."""
    done = run_train_once(tmp, "--epochs", "1", "--batch-size", str(batch), *options)
    done.check_returncode()
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def write_job(model: str, x: np.ndarray, y: np.ndarray, tmp: Path) -> None:
    """tmp's spec.json, w.safetensors (PyTorch's initial weights, seed 0) and d.safetensors for `train_once`."""
    spec = load_spec(model)
    (tmp / "spec.json").write_text(json.dumps(spec.raw))
    save_file(wire_weights(build_module(spec, seed=0)), str(tmp / "w.safetensors"))
    save_file({"x": x, "y": y}, str(tmp / "d.safetensors"))


def wasm_speed(tmp: Path, batch: int, *options: str) -> float:
    """Samples/s of one SGD epoch of the WASM trainer on tmp's job (`write_job`); `options` for
    train-once.mjs (`--runtime chromium`)."""
    return float(train_once(tmp, batch, "--lr", "0.05", "--no-shuffle", *options)["samplesPerSecond"])


def wasm(*options: str) -> Callable[[str, np.ndarray, np.ndarray, Path, int], float]:
    """A contender for `main`: `wasm_speed` with these train-once.mjs options."""
    return lambda model, x, y, tmp, batch: wasm_speed(tmp, batch, *options)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples-mlp", type=int, default=4000)
    parser.add_argument("--samples-cnn", type=int, default=500)
    parser.add_argument("--batches", type=int, nargs="+", default=[10, 32, 128])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="no untimed warm-up epoch before each timed one")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    n = os.cpu_count() or 1
    warm = () if args.cold else ("--warmup",)
    contenders = {
        "wasm_1t": wasm(*warm, "--no-relaxed-simd"),
        "wasm_1t_relaxed": wasm(*warm),
        "wasm_nt": wasm(*warm, "--threads", str(n)),
        "wasm_chromium_1t": wasm(*warm, "--runtime", "chromium", "--no-relaxed-simd"),
        "wasm_chromium_1t_relaxed": wasm(*warm, "--runtime", "chromium"),
        "wasm_chromium_nt": wasm(*warm, "--runtime", "chromium", "--threads", str(n)),
        "torch_1t": lambda model, x, y, tmp, batch: torch_speed(model, x, y, 1, batch, warmup=not args.cold),
        "torch_nt": lambda model, x, y, tmp, batch: torch_speed(model, x, y, n, batch, warmup=not args.cold),
    }
    train = load_split("train")
    console = Console()
    table = Table(title=f"local training, samples/s (SGD, one epoch, best of {args.repeat}; N = {n} threads)")
    for col in ("model", "batch", "wasm node 1t", "wasm node 1t relaxed", "wasm node Nt", "wasm chromium 1t",
                "wasm chromium 1t relaxed", "wasm chromium Nt", "torch 1t", "torch Nt", "node 1t / torch 1t",
                "node 1t relaxed / torch 1t", "node Nt / torch Nt", "chromium Nt / 1t",
                "chromium Nt / 1t relaxed"):  # fmt: skip
        table.add_column(col, justify="right")
    figures: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for model, samples in (("mnist-mlp", args.samples_mlp), ("mnist-cnn", args.samples_cnn)):
            x, y = train.x[:samples], train.y[:samples]
            write_job(model, x, y, tmp)
            flop = train_flops(model, x, y, min(args.batches))  # per sample: the same at every batch size
            for batch in args.batches:
                best = dict.fromkeys(contenders, 0.0)
                for _ in range(args.repeat):
                    for name, speed in contenders.items():
                        best[name] = max(best[name], speed(model, x, y, tmp, batch))
                b = best
                ratios = (b["wasm_1t"] / b["torch_1t"], b["wasm_1t_relaxed"] / b["torch_1t"],
                          b["wasm_nt"] / b["torch_nt"], b["wasm_chromium_nt"] / b["wasm_chromium_1t"],
                          b["wasm_chromium_nt"] / b["wasm_chromium_1t_relaxed"])  # fmt: skip
                table.add_row(model, str(batch), *(f"{v:,.0f}" for v in b.values()), *(f"{r:.2f}" for r in ratios))
                figures.setdefault(model, {})[str(batch)] = {**best, "flop_per_sample": flop}
    console.print(table)
    rates = Table(title="arithmetic rate, GFLOP/s (samples/s × a training step's FLOP per sample)")
    for col in ("model", "batch", "MFLOP per sample", *contenders):
        rates.add_column(col, justify="right")
    for model, by_batch in figures.items():
        for batch, f in by_batch.items():
            per_sample = f["flop_per_sample"]
            rates.add_row(model, batch, f"{per_sample / 1e6:.1f}",
                          *(f"{f[name] * per_sample / 1e9:.1f}" for name in contenders))  # fmt: skip
    console.print(rates)
    for build in (WASM, WASM_RELAXED, WASM_THREADS, WASM_THREADS_RELAXED):
        raw = build.read_bytes()
        console.print(
            f"wasm size: {len(raw):,} bytes raw, {len(gzip.compress(raw, 9)):,} bytes gzip ({build.relative_to(ROOT)})"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
