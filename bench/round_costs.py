"""Coordinator overhead and wire bytes, measured on one federation.

Runs `pollen simulate` in-process (real client processes, real WebSockets) and
prints, per round and overall:

* overhead ratio = (round wall time − slowest client's training time) / slowest
  client's training time: what the coordinator adds on top of the critical path
  (broadcast, upload, validation, aggregation, evaluation, the DB commit);
* bytes per client per round, down and up, relative to the model's fp32 size.
  Bytes are protocol frames (header + safetensors); WebSocket/TCP framing adds
  a few bytes per frame on top.

    python -m bench.round_costs [--model mnist-mlp] [--clients 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
from statistics import median

from rich.console import Console
from rich.table import Table

from coordinator.models.spec import load_spec
from coordinator.persistence.store import Store
from coordinator.settings import Settings
from coordinator.simulation import Population, simulate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mnist-mlp")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=1)
    args = parser.parse_args()
    console = Console()
    db = f"sqlite:///{tempfile.mkdtemp(prefix='pollen-bench-')}/bench.db"
    settings = Settings(db=db, port=0, model=args.model, rounds=args.rounds, local_epochs=args.local_epochs)
    result = simulate(settings, Population(args.clients), None, Console(quiet=True))
    store = Store(db)
    rounds = store.rounds(result["run_id"])
    store.close()
    model_bytes = load_spec(args.model).num_parameters() * 4

    table = Table(title=f"{args.model}, {args.clients} Python clients, E={args.local_epochs}")
    for col in ("round", "wall s", "slowest client s", "overhead s", "overhead ratio", "down/model", "up/model"):
        table.add_column(col, justify="right")
    ratios, downs, ups = [], [], []
    # Round 1 includes client start-up (imports, first allocation): report it, leave it out of the summary.
    for r in rounds:
        compute = r.metrics["client_seconds_max"]
        overhead = r.seconds - compute
        down = r.metrics["bytes_out"] / r.metrics["selected"] / model_bytes
        up = r.metrics["bytes_in"] / r.clients / model_bytes
        if r.round > 1:
            ratios.append(overhead / compute)
            downs.append(down)
            ups.append(up)
        table.add_row(
            str(r.round),
            f"{r.seconds:.3f}",
            f"{compute:.3f}",
            f"{overhead:.3f}",
            f"{overhead / compute:.3f}",
            f"{down:.4f}",
            f"{up:.4f}",
        )
    console.print(table)
    console.print(f"coordinator overhead per round / client compute (median, rounds 2+): {median(ratios):.3f}")
    console.print(
        f"bytes per client per round / model size (median): down {median(downs):.4f}, up {median(ups):.4f}, "
        f"total {median(downs) + median(ups):.4f}  (model: {model_bytes:,} bytes fp32)"
    )


if __name__ == "__main__":
    main()
