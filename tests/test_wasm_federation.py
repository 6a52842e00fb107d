"""Federations of Node processes running the real WebAssembly trainer over real WebSockets."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from coordinator.models.spec import load_spec
from coordinator.settings import Settings
from coordinator.simulation import Population, simulate

pytestmark = pytest.mark.slow


def run(tmp_path: Path, clients: int, **settings: Any) -> dict[str, Any]:
    s = Settings(**{"db": f"sqlite:///{tmp_path}/sim.db", "port": 0, **settings})
    result = simulate(s, Population(clients, backend="wasm"), None, Console(quiet=True))
    assert result["state"] == "completed"
    assert all(r["clients"] == clients for r in result["rounds"]), result["rounds"]
    return result


def test_mlp_on_wasm_clients_with_int8_updates_and_fp16_weights_reaches_92_percent(tmp_path: Path) -> None:
    # The convolutional tests below keep fp32 both ways; this one takes SPEC §2.1's smallest pair.
    result = run(tmp_path, 5, model="mnist-mlp", rounds=10, update_encoding="int8", weights_encoding="fp16")
    assert max(r["accuracy"] for r in result["rounds"]) >= 0.92, result["rounds"]
    model_bytes = 4 * sum(math.prod(s) for s in load_spec("mnist-mlp").wire_shapes().values())
    for r in result["rounds"]:
        assert r["bytes_in"] < 0.27 * 5 * model_bytes and r["bytes_out"] < 0.51 * 5 * model_bytes, r


ADAM = {"optimizer": "adam", "lr": 0.002, "batch_size": 32}


@pytest.mark.parametrize(("model", "extra"), [("mnist-cnn", {}), ("mnist-cnn-bn", {}), ("mnist-vit", ADAM)])
def test_convolutional_and_transformer_models_train_on_wasm_clients(
    tmp_path: Path, model: str, extra: dict[str, Any]
) -> None:
    # Short runs: the point is that they train and improve; speed is bench/wasm_speed.py's job.
    result = run(tmp_path, 3, model=model, rounds=2, local_epochs=1, **extra)
    first, last = result["rounds"][0]["accuracy"], result["rounds"][-1]["accuracy"]
    print(f"{model} on 3 wasm clients: accuracy {first:.4f} after round 1, {last:.4f} after round 2")
    assert last > 0.5 and last >= first - 0.02, result["rounds"]
