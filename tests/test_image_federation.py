"""Image folders: participants' pictures (scikit-learn's 8×8 digits as PNG folders, one per class) train
a federation of Python clients with augmentation, and browser pages that pick their pictures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from coordinator.settings import Settings
from coordinator.simulation import Population, simulate
from tests.digits import SPEC, write_folders

pytestmark = pytest.mark.slow


def settings(tmp_path: Path, **extra: object) -> tuple[Settings, Path]:
    train, test = write_folders(tmp_path)
    spec = tmp_path / "digits.json"
    spec.write_text(json.dumps(SPEC))
    values = {"db": f"sqlite:///{tmp_path}/sim.db", "port": 0, "model": str(spec), "test_data": str(test),
              "lr": 0.1, "batch_size": 16, **extra}  # fmt: skip
    return Settings(**values), train  # type: ignore[arg-type]


def test_python_clients_train_on_picture_folders_with_augmentation(tmp_path: Path) -> None:
    s, train = settings(tmp_path, rounds=8, local_epochs=2, augment_rotate=10.0, fraction_evaluate=1.0)
    result = simulate(s, Population(4, data=train), None, Console(quiet=True))
    last = result["rounds"][-1]
    print("digits, python:", [round(r["accuracy"], 4) for r in result["rounds"]], "macro-F1", last["macro_f1"])
    assert result["state"] == "completed" and last["accuracy"] > 0.85 and last["macro_f1"] > 0.85, result["rounds"]


def test_pages_train_on_pictures_picked_in_their_file_picker(tmp_path: Path) -> None:
    s, train = settings(tmp_path, rounds=3, local_epochs=2)
    result = simulate(s, Population(2, backend="browser", data=train), None, Console(quiet=True))
    text = (Path(result["client_logs"]) / "client-1.log").read_text()
    states = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    print("digits, pages:", [r["accuracy"] for r in result["rounds"]], [s["ownData"] for s in states])
    assert all(s["rounds"] == [1, 2, 3] and s["ownData"]["rows"] >= 700 for s in states), states
    assert all("refused" not in s["ownData"]["summary"] for s in states), states
    assert all(s["ownData"]["pictures"] == 12 for s in states), states  # the preview shows the first 12
    assert result["rounds"][-1]["accuracy"] > 0.7, result["rounds"]
