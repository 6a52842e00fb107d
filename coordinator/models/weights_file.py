"""Model weights on disk: PyTorch `.pt` state_dicts and `.safetensors` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from coordinator.models.spec import ModelSpec
from coordinator.models.torch_model import build_module, load_wire_weights, wire_weights


def read_weights(path: str | Path, spec: ModelSpec) -> dict[str, np.ndarray]:
    """Load a state_dict from `.pt` or `.safetensors` and check it fits the spec."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}")
    module = build_module(spec)
    load_wire_weights(module, {k: v.float().numpy() for k, v in state.items() if v.is_floating_point()})
    return wire_weights(module)


def write_weights(path: str | Path, spec: ModelSpec, weights: dict[str, np.ndarray]) -> None:
    """Write a file that the spec's PyTorch module accepts in `load_state_dict` (all keys, buffers included)."""
    path = Path(path)
    module = build_module(spec)
    load_wire_weights(module, weights)
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, path)
    elif path.suffix in (".pt", ".pth"):
        torch.save(state, path)
    else:
        raise ValueError(f"{path}: use a .pt, .pth or .safetensors file name")
