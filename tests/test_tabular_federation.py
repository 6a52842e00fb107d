"""Nothing is MNIST-bound: a clinic-style table (breast cancer, 30 features, class names in a column)
federated over Python and WASM clients reaches centralised training's accuracy on the same split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from coordinator.settings import Settings
from coordinator.simulation import Population, simulate
from tests.tabular import LABEL, SPEC, centralised_accuracy, write_tables

pytestmark = pytest.mark.slow

ROUNDS, EPOCHS = 20, 2
LOCAL: dict[str, Any] = {"batch_size": 16, "lr": 0.1}


@pytest.mark.parametrize("backend", ["python", "wasm"])
def test_a_tabular_federation_comes_within_two_points_of_centralised_training(tmp_path: Path, backend: str) -> None:
    train, test = write_tables(tmp_path)
    spec = tmp_path / "tumour-mlp.json"
    spec.write_text(json.dumps(SPEC))
    settings = Settings(db=f"sqlite:///{tmp_path}/sim.db", port=0, model=str(spec), test_data=str(test),
                        label_column=LABEL, rounds=ROUNDS, local_epochs=EPOCHS, fraction_evaluate=1.0,
                        **LOCAL)  # fmt: skip
    result = simulate(settings, Population(5, backend=backend, data=train), None, Console(quiet=True))
    central = centralised_accuracy(train, test, ROUNDS * EPOCHS, **LOCAL)
    last = result["rounds"][-1]
    print(f"{backend}: federated {last['accuracy']:.4f} (macro-F1 {last['macro_f1']:.4f}), centralised {central:.4f}")
    assert result["state"] == "completed" and last["clients"] == 5
    assert last["accuracy"] >= central - 0.02, result["rounds"]
    assert last["macro_f1"] > 0.9 and last["federated_accuracy"] > 0.9, last
