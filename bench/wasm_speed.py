"""Local training speed of the WebAssembly trainer (CPU backend, under Node and in Chromium) against PyTorch.

Same model, weights, data, batch size and optimizer (SGD), one epoch each, at each of --batches;
all timings exclude start-up and come from this one run on this machine. Each figure is the
best of --repeat runs, interleaved, because a shared machine's speed drifts. Prints samples/s,
the ratios WASM / PyTorch at 1 thread and at PyTorch's default thread count, and the
size of the optimised .wasm (raw and gzip). The Chromium job is the page's own build in headless
Chromium (`train-once.mjs --runtime chromium`). `--json-out` also writes the figures as
`{model: {batch: {wasm_1t, wasm_nt, wasm_chromium_1t, torch_1t, torch_nt}}}` in samples/s; `wasm_nt`
is null while the trainer has no threaded build; `torch_nt` is at PyTorch's default thread count
(the machine's cores).

    python -m bench.wasm_speed [--samples-mlp 4000] [--samples-cnn 500] [--batches 10 32 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from safetensors.numpy import save_file
from torch.nn import functional

from coordinator.data.mnist import load_split
from coordinator.models.spec import load_spec
from coordinator.models.torch_model import build_module, wire_weights

ROOT = Path(__file__).resolve().parents[1]
WASM = ROOT / "client_wasm" / "pkg" / "web" / "pollen_trainer_bg.wasm"


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


def wasm_speed(model: str, x: np.ndarray, y: np.ndarray, tmp: Path, batch: int, *options: str) -> float:
    """Samples/s of one SGD epoch of the WASM trainer; `options` for train-once.mjs (`--runtime chromium`)."""
    write_job(model, x, y, tmp)
    return float(train_once(tmp, batch, "--lr", "0.05", "--no-shuffle", *options)["samplesPerSecond"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples-mlp", type=int, default=4000)
    parser.add_argument("--samples-cnn", type=int, default=500)
    parser.add_argument("--batches", type=int, nargs="+", default=[10, 32, 128])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    train = load_split("train")
    console = Console()
    table = Table(title=f"local training, samples/s (SGD, one epoch, best of {args.repeat})")
    for col in (
        "model",
        "batch",
        "wasm (node, cpu, 1 thread)",
        "wasm (chromium, cpu, 1 thread)",
        "torch 1 thread",
        f"torch {default_threads} threads",
        "wasm / torch-1",
        f"wasm / torch-{default_threads}",
    ):
        table.add_column(col, justify="right")
    figures: dict[str, dict[str, dict[str, float | None]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model, n in (("mnist-mlp", args.samples_mlp), ("mnist-cnn", args.samples_cnn)):
            x, y = train.x[:n], train.y[:n]
            for batch in args.batches:
                w = wc = t1 = tn = 0.0
                for _ in range(args.repeat):
                    w = max(w, wasm_speed(model, x, y, Path(tmp), batch))
                    wc = max(wc, wasm_speed(model, x, y, Path(tmp), batch, "--runtime", "chromium"))
                    t1 = max(t1, torch_speed(model, x, y, 1, batch))
                    tn = max(tn, torch_speed(model, x, y, default_threads, batch))
                figures.setdefault(model, {})[str(batch)] = {
                    "wasm_1t": w,
                    "wasm_nt": None,
                    "wasm_chromium_1t": wc,
                    "torch_1t": t1,
                    "torch_nt": tn,
                }
                row = (f"{w:,.0f}", f"{wc:,.0f}", f"{t1:,.0f}", f"{tn:,.0f}", f"{w / t1:.3f}", f"{w / tn:.3f}")
                table.add_row(model, str(batch), *row)
    console.print(table)
    raw = WASM.read_bytes()
    console.print(
        f"wasm size: {len(raw):,} bytes raw, {len(gzip.compress(raw, 9)):,} bytes gzip ({WASM.relative_to(ROOT)})"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
