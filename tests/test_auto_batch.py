"""`batch-size: "auto"` (SPEC §5): the shared vectors, the task config, the run settings, and a Python job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator.models import step_memory
from coordinator.models.local_training import TrainConfig, train_delta
from coordinator.models.spec import load_spec
from coordinator.models.torch_model import build_module, wire_weights
from coordinator.settings import Settings

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "protocol" / "vectors" / "auto-batch.json").read_text())


@pytest.mark.parametrize("name", sorted(VECTORS["models"]))
def test_the_estimate_counts_what_pytorch_outputs(name: str) -> None:
    spec, expected = load_spec(name), VECTORS["models"][name]
    assert spec.num_parameters() == expected["parameters"]
    assert step_memory.activation_len(spec) == expected["activation_len"]


def test_every_shared_case_picks_its_batch_or_fails_alike() -> None:
    specs = {name: load_spec(name) for name in VECTORS["models"]}
    assert len(VECTORS["cases"]) > 100 and any("error" in c for c in VECTORS["cases"])
    for case in VECTORS["cases"]:
        spec, budget = specs[case["model"]], step_memory.budget_bytes(case["budget_mb"])
        if "error" in case:
            with pytest.raises(ValueError, match=case["error"]):
                step_memory.largest_batch(spec, case["slots"], budget, case["examples"])
        else:
            assert step_memory.largest_batch(spec, case["slots"], budget, case["examples"]) == case["batch"], case


def test_optimizer_state_is_counted_per_parameter() -> None:
    assert [step_memory.state_slots(o, m) for o, m in [("sgd", 0), ("sgd", 0.9), ("adam", 0), ("adamw", 0.9)]] == [
        0,
        1,
        2,
        2,
    ]
    assert [step_memory.state_slots("rmsprop", m) for m in (0.0, 0.5)] == [1, 2]


def wire(**config: Any) -> TrainConfig:
    return TrainConfig.from_wire(config)


def test_the_task_config_reads_auto_and_refuses_what_is_not_a_batch() -> None:
    assert (wire(**{"batch-size": "auto"}).batch_size, wire(**{"batch-size": 32}).batch_size) == ("auto", 32)
    assert wire(**{"batch-size": "auto", "memory-budget-mb": 64}).memory_budget_mb == 64.0
    for bad in ("all", 0, -4, True, 2.5):
        with pytest.raises(ValueError, match='positive integer or "auto"'):
            wire(**{"batch-size": bad})
    with pytest.raises(ValueError, match='for batch-size "auto"'):
        wire(**{"batch-size": 8, "memory-budget-mb": 64})
    with pytest.raises(ValueError, match="must be positive"):
        wire(**{"batch-size": "auto", "memory-budget-mb": -1}).batch_for(load_spec("mnist-mlp"), 10)


def test_a_python_job_trains_at_the_batch_its_budget_fits() -> None:
    spec = load_spec("mnist-mlp")
    budget = step_memory.model_bytes(spec) + step_memory.training_bytes(spec, 8, slots=0)  # 8 fits, 16 does not
    module = build_module(spec, seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 40).astype(np.int64)
    batches: list[int] = []
    config = {"batch-size": "auto", "memory-budget-mb": budget / step_memory.MB, "local-epochs": 1, "seed": 1}
    train_delta(module, wire_weights(module), x, y, wire(**config), on_batch=lambda e, b, loss: batches.append(b))
    assert batches == [0, 1, 2, 3, 4]  # 40 examples at batch 8
    config["memory-budget-mb"] = 1.0  # the weights alone are more
    with pytest.raises(ValueError, match="even at batch size 1, over the budget of 1 MB"):
        train_delta(module, wire_weights(module), x, y, wire(**config))


def test_run_settings_take_auto_and_send_it_with_the_budget() -> None:
    settings = Settings(batch_size="auto", memory_budget_mb=64)
    assert settings.train_config()["batch-size"] == "auto"
    assert settings.train_config()["memory-budget-mb"] == 64
    assert Settings(batch_size="32").batch_size == 32  # as typer passes it
    assert "memory-budget-mb" not in Settings().train_config()
    for bad in ("0", "big", 1.5, True):
        with pytest.raises(ValueError, match='--batch-size is a positive integer or "auto"'):
            Settings(batch_size=bad)  # type: ignore[arg-type]  # as TOML or a stored run may give it
    with pytest.raises(ValueError, match="for --batch-size auto"):
        Settings(batch_size=16, memory_budget_mb=64)
