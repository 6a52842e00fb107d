"""Local training speed of the WebAssembly trainer on WebGPU against its CPU path and PyTorch.

Same model, weights, data, batch size and optimizer (SGD), one timed epoch after one untimed
one for every contender (WebGPU compiles and tunes its kernels per shape once, CUDA likewise),
best of --repeat runs. The trainer runs its WebGPU backend:

* under Node with Dawn (the npm package `webgpu`) where Dawn finds a GPU through Vulkan: the
  build the page loads, on the machine's GPU (`--runtime node`);
* otherwise in headless Chromium on SwiftShader, Dawn's CPU-emulated adapter (`--runtime
  chromium`, what CI machines have): the sweep still runs end to end, but its speeds say
  nothing about a GPU. `--runtime auto` (the default) tries Node first and says why it fell back.

Prints samples/s of WebGPU (and of WebGPU in mixed precision, `precision: "fp16"`, where the
adapter has `shader-f16`), the WASM CPU path (Node, 1 thread), PyTorch on the CPU (1 thread
and the machine's cores) and PyTorch CUDA (fp32) when a CUDA device is present, the ratios,
and the issue's goals; `--json-out` writes `{model: {batch: {...}}}` in samples/s.

    python -m bench.webgpu_speed [--batches 10 32 128 512] [--samples-mlp 4000] [--samples-cnn 2000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from bench.wasm_speed import torch_speed, train_once, write_job
from coordinator.data.mnist import load_split

SWIFTSHADER_SAMPLES = 256  # SwiftShader emulates the GPU on the CPU: a few batches say all it can


def webgpu_runtime(requested: str, tmp: Path, console: Console) -> str:
    """The runtime the WebGPU column uses: Node with Dawn if it finds an adapter, else Chromium."""
    if requested != "auto":
        return requested
    try:
        train_once(tmp, 10, "--backend", "webgpu")
        return "node"
    except subprocess.CalledProcessError as e:
        reason = e.stderr.strip().splitlines()[-1] if e.stderr.strip() else f"exit {e.returncode}"
        console.print(f"[yellow]WebGPU under Node: {reason}; using Chromium's SwiftShader adapter (no GPU)[/]")
        return "chromium"


def fp16_runs(tmp: Path, runtime: str) -> bool:
    """Whether an fp16 job runs in mixed precision on this WebGPU (the adapter has `shader-f16`)."""
    report = train_once(tmp, 10, "--backend", "webgpu", "--runtime", runtime, "--precision", "fp16")
    return str(report["precision"]) == "fp16"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples-mlp", type=int, default=4000)
    parser.add_argument("--samples-cnn", type=int, default=2000)
    parser.add_argument("--batches", type=int, nargs="+", default=[10, 32, 128, 512])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--runtime", choices=["auto", "node", "chromium"], default="auto")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--cuda-job", nargs=3, metavar=("MODEL", "SAMPLES", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cuda_job:
        model, n, batch = args.cuda_job[0], int(args.cuda_job[1]), int(args.cuda_job[2])
        split = load_split("train")
        print(torch_speed(model, split.x[:n], split.y[:n], 1, batch, "cuda", warmup=True))
        return
    console = Console()
    cores = torch.get_num_threads()
    cuda = torch.cuda.is_available()
    train = load_split("train")
    figures: dict[str, dict[str, dict[str, float | str | None]]] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        write_job("mnist-mlp", train.x[:64], train.y[:64], tmp)
        runtime = webgpu_runtime(args.runtime, tmp, console)
        adapter = "SwiftShader (Chromium)" if runtime == "chromium" else "the GPU (Node + Dawn)"
        fp16 = fp16_runs(tmp, runtime)
        if not fp16:
            console.print(f"[yellow]{adapter}: no shader-f16, so no mixed-precision column[/]")
        table = Table(title=f"local training, samples/s (SGD, one epoch after a warm-up, best of {args.repeat})")
        columns = ["model", "batch", f"webgpu ({adapter})"] + (["webgpu fp16"] if fp16 else [])
        columns += ["wasm cpu (node, 1 thread)", "torch cpu 1 thread"]
        columns += [f"torch cpu {cores} threads"] + (["torch cuda"] if cuda else [])
        columns += ["webgpu / wasm cpu"] + (["webgpu / torch cuda"] if cuda else [])
        columns += ["fp16 / fp32"] if fp16 else []
        for col in columns:
            table.add_column(col, justify="right")
        for model, n in (("mnist-mlp", args.samples_mlp), ("mnist-cnn", args.samples_cnn)):
            n = min(n, SWIFTSHADER_SAMPLES) if runtime == "chromium" else n
            x, y = train.x[:n], train.y[:n]
            write_job(model, x, y, tmp)
            for batch in args.batches:
                runs: dict[str, Callable[[], float]] = {
                    "webgpu": partial(job, tmp, batch, "--backend", "webgpu", "--runtime", runtime),
                    "wasm_1t": partial(job, tmp, batch),
                    "torch_1t": partial(torch_speed, model, x, y, 1, batch, warmup=True),
                    "torch_nt": partial(torch_speed, model, x, y, cores, batch, warmup=True),
                }
                if fp16:
                    gpu = ("--backend", "webgpu", "--runtime", runtime)
                    runs = {
                        "webgpu": runs.pop("webgpu"),
                        "webgpu_fp16": partial(job, tmp, batch, *gpu, "--precision", "fp16"),
                        **runs,
                    }
                if cuda:
                    runs["torch_cuda"] = partial(cuda_speed, model, n, batch)
                best: dict[str, float] = {}
                for _ in range(args.repeat):
                    for key, run in runs.items():
                        with console.status(f"{model}, batch {batch}: {key}"):
                            best[key] = max(best.get(key, 0.0), run())
                figures.setdefault(model, {})[str(batch)] = {**best, "webgpu_runtime": runtime, "samples": n}
                row = [f"{best[k]:,.0f}" for k in runs]
                row += [f"{best['webgpu'] / best['wasm_1t']:.2f}"]
                row += [f"{best['webgpu'] / best['torch_cuda']:.3f}"] if cuda else []
                row += [f"{best['webgpu_fp16'] / best['webgpu']:.2f}"] if fp16 else []
                table.add_row(model, str(batch), *row)
    console.print(table)
    console.print(
        "goals on an H100: mnist-mlp at batch 32, webgpu ≥ 1× wasm cpu;"
        " mnist-cnn at batch 128, webgpu ≥ 0.25× torch cuda"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=1))


def cuda_speed(model: str, n: int, batch: int) -> float:
    """PyTorch CUDA's samples/s, measured in a child process: this one never holds a CUDA context
    while the trainer's WebGPU jobs share the GPU."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.webgpu_speed", "--cuda-job", model, str(n), str(batch)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return float(out.stdout.split()[-1])


def job(tmp: Path, batch: int, *options: str) -> float:
    """Samples/s of one warmed-up epoch of the trainer on tmp's job."""
    return float(train_once(tmp, batch, "--lr", "0.05", "--no-shuffle", "--warmup", *options)["samplesPerSecond"])


if __name__ == "__main__":
    main()
