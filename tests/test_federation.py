"""Whole federations with real client processes: the issue's accuracy and robustness targets."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from coordinator.persistence.store import Store
from coordinator.settings import Settings
from coordinator.simulation import Population, simulate

pytestmark = pytest.mark.slow


def run(tmp_path: Path, clients: int = 10, partition: str = "iid", **settings: Any) -> dict[str, Any]:
    pop_fields = {k: settings.pop(k) for k in ("poisoned", "dropouts", "dropout_round") if k in settings}
    s = Settings(**{"db": f"sqlite:///{tmp_path}/sim.db", "port": 0, **settings})
    result = simulate(
        s, Population(clients, partition=partition, **pop_fields), tmp_path / "out.json", Console(quiet=True)
    )
    assert result["state"] == "completed"
    return result


def best(result: dict[str, Any]) -> float:
    return float(max(r["accuracy"] for r in result["rounds"]))


def test_mlp_iid_defaults_reach_93_percent_within_20_rounds(tmp_path: Path) -> None:
    result = run(tmp_path, rounds=20)
    assert len(result["rounds"]) == 20
    assert best(result) >= 0.93, result["rounds"]


def test_mlp_dirichlet_reaches_88_percent_within_30_rounds(tmp_path: Path) -> None:
    result = run(tmp_path, partition="dirichlet:0.5", rounds=30)
    assert best(result) >= 0.88, result["rounds"]


def test_cnn_reaches_96_percent_within_4_rounds_inside_the_goal_of_10(tmp_path: Path) -> None:
    # A 10-round run here gave 0.941, 0.9615, 0.9675, 0.9705, then 0.971 to 0.9765; at 40 s a round on CI,
    # the last six rounds cost 4 minutes and showed nothing more.
    result = run(tmp_path, model="mnist-cnn", rounds=4)
    assert best(result) >= 0.96, result["rounds"]


@pytest.mark.parametrize("strategy", ["krum", "trimmed-mean"])
def test_robust_strategies_survive_two_poisoned_clients(tmp_path: Path, strategy: str) -> None:
    result = run(tmp_path, strategy=strategy, rounds=10, poisoned=2)
    assert best(result) >= 0.90, result["rounds"]


def test_fedavg_is_wrecked_by_the_same_poison(tmp_path: Path) -> None:
    """The control for the test above: the attack is real."""
    result = run(tmp_path, strategy="fedavg", rounds=3, local_epochs=1, poisoned=2)
    assert result["rounds"][0]["clients"] == 10
    assert result["final_accuracy"] < 0.5, result["rounds"]


def test_dp_run_reports_rising_epsilon(tmp_path: Path) -> None:
    result = run(tmp_path, rounds=5, dp_clip=1.0, dp_noise=0.5, clients_per_round=10, local_epochs=1)
    eps = [r["epsilon"] for r in result["rounds"]]
    assert all(e is not None and e > 0 for e in eps)
    assert all(b > a for a, b in itertools.pairwise(eps)), eps
    assert all(r["accuracy"] is not None for r in result["rounds"])


def test_three_clients_vanishing_mid_round_do_not_stall_it(tmp_path: Path) -> None:
    result = run(tmp_path, rounds=3, local_epochs=1, dropouts=3, dropout_round=2, round_timeout=300)
    r2 = result["rounds"][1]
    assert r2["clients"] == 7
    assert r2["seconds"] < 60  # disconnects answer at once; the 300 s timeout never ran out
    assert result["rounds"][2]["clients"] == 7


@pytest.mark.parametrize("dp", [False, True], ids=["plain", "dp"])
def test_half_the_clients_vanishing_mid_round_leave_the_round_to_the_rest(tmp_path: Path, dp: bool) -> None:
    # Under DP the cohort is fixed at 6, so the run ends with the round they vanish in.
    privacy: dict[str, Any] = {"dp_clip": 1.0, "dp_noise": 0.5, "clients_per_round": 6} if dp else {}
    result = run(
        tmp_path, clients=6, rounds=2, local_epochs=1, dropouts=3, dropout_round=2, round_timeout=300, **privacy
    )
    first, second = result["rounds"]
    assert (first["clients"], second["clients"]) == (6, 3)
    assert second["seconds"] < 60
    assert second["accuracy"] != first["accuracy"], "the round aggregated the three that stayed"
    if dp:
        assert second["epsilon"] > first["epsilon"] > 0


def test_int8_updates_and_fp16_weights_train_as_well_on_far_fewer_bytes(tmp_path: Path) -> None:
    # Python clients announce every encoding (SPEC §2.1): deltas come up as int8 with stochastic rounding,
    # weights go down as fp16. Bytes per client per round are about (1/4 + 1/2) / 2 of fp32's.
    result = run(tmp_path, rounds=10, update_encoding="int8", weights_encoding="fp16")
    assert best(result) >= 0.92, result["rounds"]
    model = 4 * (784 * 128 + 128 + 128 * 10 + 10)
    store = Store(f"sqlite:///{tmp_path}/sim.db")
    for r in store.rounds(result["run_id"]):
        m = r.metrics
        down, up = m["bytes_out"] / m["selected"] / model, m["bytes_in"] / m["replied"] / model
        assert 0.49 < down < 0.52 and 0.25 < up < 0.28, (down, up)
    store.close()


def test_simulate_with_gateways_runs_the_clients_through_them(tmp_path: Path) -> None:
    # The command line, as an operator runs it: a local Ray instance, two gateways, the clients sent to
    # them by /api/join. The coordinator's own /ws is never used, so a run that completes went through them.
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "coordinator", "simulate", "--gateways", "2", "--clients", "4", "--rounds", "3"]
    cmd += ["--local-epochs", "1", "--db", f"sqlite:///{tmp_path}/sim.db", "--port", "0", "--json-out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    assert result["state"] == "completed"
    assert [r["clients"] for r in result["rounds"]] == [4, 4, 4]
    assert result["rounds"][-1]["accuracy"] > result["rounds"][0]["accuracy"] > 0.5
    assert len(result["gateways"]) == 2 and all(g["last_phase_bytes"] > 0 for g in result["gateways"])
