"""Regenerate `schemas/model-spec.schema.json` from the layer table in
`coordinator/models/layer_types.py`. Run from the repo root:
    .venv/bin/python protocol/tools/make_model_schema.py
"""

from __future__ import annotations

import json
from pathlib import Path

from coordinator.models.spec_schema import model_spec_schema

OUT = Path(__file__).resolve().parents[1] / "schemas" / "model-spec.schema.json"


def main() -> None:
    OUT.write_text(json.dumps(model_spec_schema(), indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
