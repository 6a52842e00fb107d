"""Regenerate `vectors/auto-batch.json`: the batch size `batch-size: "auto"` picks (SPEC §5).

For each built-in model and a few optimizer states, budgets and data sizes, the vector gives
the values a training step's estimate is made of and the batch every client must pick, or
the error it must raise. The values come from PyTorch and a plain search, not from either
implementation's estimate: a layer's output sizes from running the built module, and the
batch from trying every power of two. Run from the repo root:
    .venv/bin/python protocol/tools/make_batch_vectors.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from coordinator.models.spec import BUILTIN_MODELS, load_spec
from coordinator.models.torch_model import build_module

OUT = Path(__file__).resolve().parents[1] / "vectors" / "auto-batch.json"
MB = 1 << 20
BUDGETS_MB = [0.5, 8, 16, 32, 64, 256, 100_000]
EXAMPLES = [40, 10_000]
SLOTS = [0, 1, 2]  # plain SGD, momentum, Adam


def activation_len(name: str) -> int:
    """Values per example in every layer's output, as PyTorch computes them, plus attention internals."""
    spec = load_spec(name)
    module = build_module(spec, seed=0)
    x = torch.zeros(1, *spec.input_shape)
    total = sum(out.numel() for out in module.outputs(x))
    for layer, out in zip(spec.layers, module.outputs(x), strict=True):
        if layer["type"] == "transformer_encoder_layer":
            _, t, d = out.shape
            total += 2 * layer["nhead"] * t * t + 2 * t * layer.get("dim_feedforward", 2048) + 6 * t * d
    return total


def case(name: str, slots: int, budget_mb: float, examples: int) -> dict[str, Any]:
    spec = load_spec(name)
    params = spec.num_parameters()
    acts = activation_len(name)
    budget = int(budget_mb * MB)

    def step(b: int) -> int:
        return 4 * params * 3 + 4 * params * (4 + slots) + 4 * acts * min(b, examples) * 3

    out: dict[str, Any] = {"model": name, "slots": slots, "budget_mb": budget_mb, "examples": examples}
    if step(1) > budget:
        out["error"] = f"needs about {math.ceil(step(1) / MB)} MB even at batch size 1"
        return out
    powers = [2**k for k in range(9)]  # 1 .. 256
    out["batch"] = min(max(b for b in powers if step(b) <= budget), examples)
    return out


def main() -> None:
    models = {
        name: {"parameters": load_spec(name).num_parameters(), "activation_len": activation_len(name)}
        for name in BUILTIN_MODELS
    }
    cases = [
        case(name, slots, budget, examples)
        for name in BUILTIN_MODELS
        for slots in SLOTS
        for budget in BUDGETS_MB
        for examples in EXAMPLES
    ]
    OUT.write_text(json.dumps({"models": models, "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases for {len(models)} models to {OUT}")


if __name__ == "__main__":
    main()
