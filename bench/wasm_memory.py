"""Peak memory of a local training job in the WebAssembly trainer (Node, CPU backend), per built-in model,
batch size and optimizer, against the page's memory budget.

Each job runs in a fresh Node process: a wasm module's linear memory only grows, so its size after
one job is that job's peak. The baseline, measured in the same run, is the module's size once the
model is built and its weights loaded, before training. Prints the peak, the training job's own
share (peak − baseline), the peak as a fraction of the budget, and which jobs exceed it.

`--backend webgpu` runs the jobs on WebGPU instead (Node with Dawn where it finds a GPU, else headless
Chromium on SwiftShader), one step of each batch size (every step of a job has the same shapes), and
adds the GPU memory: the most that Burn's allocator reserved during the job (`gpuPeakBytes`, sampled
as the job reads its losses back and at its end; the allocator counts it, so SwiftShader's figures are
a GPU's). The budget applies to each memory alone.

    python -m bench.wasm_memory [--samples 320] [--batches 10 32 128] [--budget-mb 256] [--backend cpu|webgpu]
        [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table
from safetensors.numpy import save_file

from bench.wasm_speed import train_once, write_job
from bench.webgpu_speed import webgpu_runtime
from coordinator.data.mnist import load_split
from coordinator.models.spec import BUILTIN_MODELS, load_spec
from coordinator.models.torch_model import build_module, wire_weights

MB = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=320)
    parser.add_argument("--batches", type=int, nargs="+", default=[10, 32, 128])
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam"])
    parser.add_argument("--budget-mb", type=float, default=256)
    parser.add_argument("--backend", choices=["cpu", "webgpu"], default="cpu")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    gpu = args.backend == "webgpu"
    train = load_split("train")
    x, y = train.x[: args.samples], train.y[: args.samples]
    console = Console()
    results: dict[str, dict[str, dict[str, float]]] = {}
    gpu_results: dict[str, dict[str, dict[str, float]]] = {}
    over = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        options: tuple[str, ...] = ()
        if gpu:
            write_job("mnist-mlp", x[:16], y[:16], tmp)
            options = ("--backend", "webgpu", "--runtime", webgpu_runtime("auto", tmp, console))
        where = f"WebGPU ({options[-1]}), one step a batch" if gpu else f"Node, CPU, one epoch of {args.samples} digits"
        table = Table(title=f"WASM trainer memory ({where}), budget {args.budget_mb:g} MB")
        columns = ["model", "optimizer", "batch", "loaded MB", "peak MB", "job MB", "peak / budget"]
        for col in columns + (["GPU peak MB", "GPU / budget"] if gpu else []):
            table.add_column(col, justify="right")
        save_file({"x": x, "y": y}, str(tmp / "d.safetensors"))
        for model in BUILTIN_MODELS:
            spec = load_spec(model)
            (tmp / "spec.json").write_text(json.dumps(spec.raw))
            save_file(wire_weights(build_module(spec, seed=0)), str(tmp / "w.safetensors"))
            for optimizer in args.optimizers:
                for batch in args.batches:
                    if gpu:  # one step: SwiftShader emulates the GPU on the CPU, slowly
                        save_file({"x": x[:batch], "y": y[:batch]}, str(tmp / "d.safetensors"))
                    report = train_once(tmp, batch, "--optimizer", optimizer, "--lr", "0.01", *options)
                    peak, loaded = report["wasmBytes"] / MB, report["wasmBytesLoaded"] / MB
                    results.setdefault(model, {}).setdefault(optimizer, {})[str(batch)] = peak
                    ratio = peak / args.budget_mb
                    row = [f"{loaded:.1f}", f"{peak:.1f}", f"{peak - loaded:.1f}", f"{ratio:.3f}"]
                    if gpu:
                        gpu_peak = report["gpuPeakBytes"] / MB
                        gpu_results.setdefault(model, {}).setdefault(optimizer, {})[str(batch)] = gpu_peak
                        ratio = max(ratio, gpu_peak / args.budget_mb)
                        row += [f"{gpu_peak:.1f}", f"{gpu_peak / args.budget_mb:.3f}"]
                    if ratio > 1:
                        over.append(f"{model} {optimizer} batch {batch}")
                    table.add_row(model, optimizer, str(batch), *row)
    console.print(table)
    console.print(f"over the budget: {', '.join(over) or 'none'}")
    if args.json_out:
        out = {"budget_mb": args.budget_mb, "peak_mb": results, **({"gpu_peak_mb": gpu_results} if gpu else {})}
        args.json_out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
