"""What the tensor encodings cost and save: accuracy and bytes per round, fp32 against int8/fp16.

Runs the same federation (`pollen simulate`'s code: real Python client processes, real
WebSockets, 10 IID clients) once per pair of encodings and prints, for each, the final and
best accuracy and the bytes per client per round relative to 2× the fp32 model (down plus
up, from the rounds' own records).

    python -m bench.encodings [--model mnist-mlp] [--rounds 20] [--pairs fp32/fp32,int8/fp16,int8/int8]
"""

from __future__ import annotations

import argparse
import tempfile

from rich.console import Console
from rich.table import Table

from coordinator.models.spec import load_spec
from coordinator.persistence.store import Store
from coordinator.settings import Settings
from coordinator.simulation import Population, simulate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mnist-mlp")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--pairs", default="fp32/fp32,int8/fp16,int8/int8", help="update/weights encodings")
    args = parser.parse_args()
    console = Console()
    size = 4 * load_spec(args.model).num_parameters()
    table = Table(title=f"{args.model}, {args.clients} IID Python clients, {args.rounds} rounds")
    for col in ("update", "weights", "final accuracy", "best", "bytes ÷ 2·model (fp32)"):
        table.add_column(col, justify="right")
    baseline: float | None = None
    for pair in args.pairs.split(","):
        up, down = pair.split("/")
        db = f"sqlite:///{tempfile.mkdtemp(prefix='pollen-enc-')}/bench.db"
        settings = Settings(
            db=db, port=0, model=args.model, rounds=args.rounds, update_encoding=up, weights_encoding=down
        )
        with console.status(f"{up} up, {down} down"):
            result = simulate(settings, Population(args.clients), None, Console(quiet=True))
        store = Store(db)
        rounds = store.rounds(result["run_id"])
        store.close()
        per_round = [
            (r.metrics["bytes_out"] / r.metrics["selected"] + r.metrics["bytes_in"] / r.metrics["replied"]) / (2 * size)
            for r in rounds
        ]
        final = rounds[-1].accuracy or 0.0
        baseline = final if baseline is None else baseline
        table.add_row(
            up,
            down,
            f"{final:.4f} ({100 * (final - baseline):+.2f} points)",
            f"{max(r.accuracy or 0.0 for r in rounds):.4f}",
            f"{sum(per_round) / len(per_round):.4f}",
        )
    console.print(table)
    console.print("goal: int8 + fp16 ≤ 0.3× the bytes, ≤ 0.5 accuracy points lost (the first row is the baseline)")


if __name__ == "__main__":
    main()
