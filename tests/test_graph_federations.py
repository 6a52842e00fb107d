"""Issue 13's acceptance runs: a user's own residual network, converted by `from-torch`, trains
as well on WebAssembly clients as on Python ones; the built-in vision transformer learns MNIST."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from coordinator.models.from_torch import convert
from coordinator.models.spec import spec_from_dict
from coordinator.models.weights_file import write_weights
from coordinator.settings import Settings
from coordinator.simulation import Population, simulate
from tests import user_models

pytestmark = pytest.mark.slow


def federate(tmp_path: Path, backend: str, clients: int, **settings: Any) -> dict[str, Any]:
    db = tmp_path / f"{backend}.db"
    s = Settings(**{"db": f"sqlite:///{db}", "port": 0, **settings})
    result = simulate(s, Population(clients, backend=backend), None, Console(quiet=True))
    assert result["state"] == "completed"
    assert all(r["clients"] == clients for r in result["rounds"]), result["rounds"]
    return result


def test_a_converted_residual_network_trains_on_wasm_as_in_python(tmp_path: Path) -> None:
    torch.manual_seed(0)
    done = convert(user_models.ResNet(), (1, 28, 28), name="user-resnet")
    spec_path, weights = tmp_path / "resnet.json", tmp_path / "resnet.safetensors"
    spec_path.write_text(json.dumps(done.spec))
    write_weights(weights, spec_from_dict(done.spec), done.weights)
    run = {"model": str(spec_path), "init": str(weights), "test_data": "mnist", "rounds": 3, "local_epochs": 1,
           "lr": 0.05, "momentum": 0.9}  # fmt: skip
    python = federate(tmp_path, "python", 5, **run)["rounds"][-1]["accuracy"]
    wasm = federate(tmp_path, "wasm", 5, **run)["rounds"][-1]["accuracy"]
    print(f"converted residual network after 3 rounds: python {python:.4f}, wasm {wasm:.4f}")
    assert python > 0.8, python
    assert abs(wasm - python) <= 0.02, (wasm, python)


def test_mnist_vit_reaches_90_percent_within_20_rounds_on_10_python_clients(tmp_path: Path) -> None:
    run = {"model": "mnist-vit", "rounds": 20, "local_epochs": 1, "batch_size": 32, "optimizer": "adam", "lr": 0.002}
    result = federate(tmp_path, "python", 10, **run)
    print(f"mnist-vit: best accuracy {max(r['accuracy'] for r in result['rounds']):.4f} in 20 rounds")
    assert max(r["accuracy"] for r in result["rounds"]) >= 0.90, result["rounds"]
