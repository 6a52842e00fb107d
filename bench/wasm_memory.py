"""Peak memory of a local training job in the WebAssembly trainer (Node, CPU backend), per built-in model,
batch size and optimizer, against the page's memory budget.

Each job runs in a fresh Node process: a wasm module's linear memory only grows, so its size after
one job is that job's peak. The baseline, measured in the same run, is the module's size once the
model is built and its weights loaded, before training. Prints the peak, the training job's own
share (peak − baseline), the peak as a fraction of the budget, and which jobs exceed it. GPU memory
is not measured here (no WebGPU under plain Node).

    python -m bench.wasm_memory [--samples 320] [--batches 10 32 128] [--budget-mb 256] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table
from safetensors.numpy import save_file

from bench.wasm_speed import train_once
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
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    train = load_split("train")
    x, y = train.x[: args.samples], train.y[: args.samples]
    console = Console()
    table = Table(
        title=f"WASM trainer memory, one epoch of {args.samples} digits (Node, CPU), budget {args.budget_mb:g} MB"
    )
    for col in ("model", "optimizer", "batch", "loaded MB", "peak MB", "job MB", "peak / budget"):
        table.add_column(col, justify="right")
    results: dict[str, dict[str, dict[str, float]]] = {}
    over = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        save_file({"x": x, "y": y}, str(tmp / "d.safetensors"))
        for model in BUILTIN_MODELS:
            spec = load_spec(model)
            (tmp / "spec.json").write_text(json.dumps(spec.raw))
            save_file(wire_weights(build_module(spec, seed=0)), str(tmp / "w.safetensors"))
            for optimizer in args.optimizers:
                for batch in args.batches:
                    report = train_once(tmp, batch, "--optimizer", optimizer, "--lr", "0.01")
                    peak, loaded = report["wasmBytes"] / MB, report["wasmBytesLoaded"] / MB
                    results.setdefault(model, {}).setdefault(optimizer, {})[str(batch)] = peak
                    ratio = peak / args.budget_mb
                    if ratio > 1:
                        over.append(f"{model} {optimizer} batch {batch}")
                    row = (f"{loaded:.1f}", f"{peak:.1f}", f"{peak - loaded:.1f}", f"{ratio:.3f}")
                    table.add_row(model, optimizer, str(batch), *row)
    console.print(table)
    console.print(f"over the budget: {', '.join(over) or 'none'}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"budget_mb": args.budget_mb, "peak_mb": results}, indent=1))


if __name__ == "__main__":
    main()
