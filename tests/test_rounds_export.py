"""`pollen rounds` writes a run's per-round record, the task's scores included, as CSV or JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from coordinator.cli import app
from coordinator.models.spec import load_spec
from coordinator.persistence.store import RoundRecord, Store


def test_rounds_export_as_csv_and_json_with_the_scores_of_the_task(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/p.db"
    store = Store(db)
    run = store.create_run(load_spec("mnist-mlp").raw, {"rounds": 2}, b"")
    for n, f1 in ((1, 0.5), (2, 0.75)):
        metrics = {"macro_f1": f1, "federated_accuracy": 0.8, "failures": [[3, "timeout"]]}
        store.record_round(run.id, RoundRecord(n, 1.5, 3, 1, 0.9, 0.3, None, metrics), b"w")
    store.close()
    runner = CliRunner()
    assert runner.invoke(app, ["rounds", "--db", db, "-o", str(tmp_path / "r.csv")]).exit_code == 0
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [(r["round"], r["macro_f1"], r["failures"], r["epsilon"]) for r in rows] == [
        ("1", "0.5", "1", ""), ("2", "0.75", "1", "")
    ]  # fmt: skip
    assert runner.invoke(app, ["rounds", "--db", db, "-o", str(tmp_path / "r.json")]).exit_code == 0
    got = json.loads((tmp_path / "r.json").read_text())
    assert got["run_id"] == run.id and got["rounds"][1]["federated_accuracy"] == 0.8
    missing = runner.invoke(app, ["rounds", "--db", db, "--run", "nope", "-o", str(tmp_path / "x.csv")])
    assert missing.exit_code != 0 and not (tmp_path / "x.csv").exists()
