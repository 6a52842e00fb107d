"""Local optimizers and schedules as options: checked once, carried in the task config, applied
per round by the coordinator and per step by the Python client (the WebAssembly trainer's
parity with PyTorch is tests/test_wasm_parity.py's)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, MetricRecord
from flwr.serverapp.strategy import FedAvg

from coordinator.federation.round_lr import RoundLr
from coordinator.models.local_training import TrainConfig, train_delta
from coordinator.models.optimization import OptimizerConfig
from coordinator.models.optimizers import make_optimizer, make_schedule
from coordinator.models.spec import load_spec
from coordinator.models.torch_model import build_module, wire_weights
from coordinator.settings import Settings
from tests.test_grid import make, task_identity, weights


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"optimizer": "lbfgs"}, "unknown optimizer"),
        ({"lr_schedule": "linear"}, "unknown lr schedule"),
        ({"lr_schedule": "exponential"}, "needs lr-gamma"),
        ({"nesterov": True}, "nesterov needs the sgd optimizer with momentum"),
        ({"grad_clip_norm": 0.0}, "grad-clip-norm must be positive"),
        ({"precision": "bf16"}, "--precision is fp32 or fp16"),
    ],
)
def test_bad_options_are_refused_by_the_settings(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**options)  # type: ignore[arg-type]


def test_options_travel_in_the_task_config_and_come_back_whole() -> None:
    s = Settings(optimizer="rmsprop", momentum=0.5, weight_decay=0.01, lr_schedule="step", lr_step_size=3,
                 lr_gamma=0.5, grad_clip_norm=1.0)  # fmt: skip
    config = s.train_config()
    assert config["lr-schedule"] == "step" and config["lr-step-size"] == 3 and config["grad-clip-norm"] == 1.0
    assert "nesterov" not in config and "lr-warmup-steps" not in config and "precision" not in config
    assert Settings(precision="fp16").train_config()["precision"] == "fp16"
    got = TrainConfig.from_wire(config).optimization()
    assert got == s.optimization()


def test_adamw_keeps_pytorchs_default_decay_unless_told() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert make_optimizer(OptimizerConfig("adamw"), params).defaults["weight_decay"] == 0.01
    assert make_optimizer(OptimizerConfig("adamw", weight_decay=0.0), params).defaults["weight_decay"] == 0.0


def test_a_one_cycle_round_ends_far_below_its_peak() -> None:
    opt = make_optimizer(OptimizerConfig(lr=1.0), [torch.nn.Parameter(torch.zeros(1))])
    schedule = make_schedule(OptimizerConfig(lr=1.0, lr_schedule="one-cycle"), opt, 10)
    assert schedule is not None
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.04) and max(rates) == pytest.approx(1.0) and rates[-1] < 0.01


def test_gradient_clipping_bounds_each_step() -> None:
    spec = load_spec("mnist-mlp")
    module = build_module(spec, seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (10, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 10)
    plain = TrainConfig(1, 10, 1.0, seed=0)
    free, _ = train_delta(module, wire_weights(module), x, y, plain)
    clipped, _ = train_delta(module, wire_weights(module), x, y, TrainConfig(1, 10, 1.0, seed=0, grad_clip_norm=0.01))
    norm = math.sqrt(sum(float((d**2).sum()) for d in clipped.values()))
    assert norm == pytest.approx(0.01, rel=1e-3)  # one SGD step of lr 1 moves by the clipped gradient
    assert math.sqrt(sum(float((d**2).sum()) for d in free.values())) > 0.1


def test_round_schedules_decay_the_rate_across_rounds() -> None:
    assert [RoundLr(0.1, "exponential", 0.5).at(r) for r in (1, 2, 3)] == pytest.approx([0.1, 0.05, 0.025])
    cosine = RoundLr(0.1, "cosine", rounds=4)
    assert cosine.at(1) == pytest.approx(0.1) and cosine.at(3) == pytest.approx(0.05) and cosine.at(4) < 0.02
    assert RoundLr(0.1).at(7) == 0.1


@pytest.mark.usefixtures(task_identity.__name__)
def test_the_grid_sends_each_round_its_rate() -> None:
    grid, nodes, _ = make([1, 2], round_lr=RoundLr(0.1, "exponential", 0.5))
    strategy = FedAvg(fraction_train=1.0, min_train_nodes=2, min_available_nodes=2, fraction_evaluate=0.0)
    strategy.start(grid, weights(), num_rounds=3, timeout=10, train_config=ConfigRecord({"lr": 0.1}),
                   evaluate_fn=lambda r, a: MetricRecord({}))  # fmt: skip
    rates = [task.config["lr"] for _, task, _ in nodes.sent if task.kind == "train"]
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
