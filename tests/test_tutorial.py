"""docs/tutorial.ipynb runs from top to bottom: a PyTorch model and a CSV, a federation of Python
clients and a browser page, the dashboard's numbers, export, load_state_dict and ONNX."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_the_tutorial_notebook_runs_from_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.read(ROOT / "docs" / "tutorial.ipynb", as_version=4)
    monkeypatch.setenv("POLLEN_REPO", str(ROOT))
    monkeypatch.setenv("POLLEN_TUTORIAL_DIR", str(tmp_path))
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    finally:
        # A failed cell leaves the coordinator and the clients it started: they are named by the run's folder.
        for proc in psutil.process_iter(["cmdline"]):
            if proc.pid != os.getpid() and any(str(tmp_path) in arg for arg in proc.info["cmdline"] or []):
                proc.kill()
    text = "\n".join(
        out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "run completed" in text and "PyTorch accuracy" in text and "largest difference from PyTorch" in text
    assert "the browser page: cpu rounds [1, 2, 3, 4, 5, 6, 7, 8]" in text, text
