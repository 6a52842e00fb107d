"""The run loop: open or resume a run, then let a Flower strategy drive its rounds over the grid.

`RunLoop.run` blocks (because `Strategy.start` does), so it lives in a thread of its
own. After every round it evaluates the global model on the held-out test set and
hands the round's record and checkpoint to its `RunSink`; whoever composes the
coordinator wires the sink to the store, the status, the metrics and the log. The
sink commits a round and its checkpoint together, so a killed coordinator resumes
after the last completed round. However the run ends (completed, stopped by the
operator, or failed), the sink hears of it exactly once, through `on_end`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp.strategy import Strategy
from flwr.supercore.task_identity import TaskIdentity

from coordinator.data.schema import DataSchema
from coordinator.federation.control import RunControl, RunStopped
from coordinator.federation.evaluation import CentralEvaluation, run_data_schema
from coordinator.federation.grid import NodeGrid
from coordinator.federation.nodes import Nodes
from coordinator.federation.phases import PhaseReport
from coordinator.federation.replies import ReplyLimits
from coordinator.federation.round_lr import RoundLr
from coordinator.federation.status import RunStatus
from coordinator.federation.strategies import build_strategy, epsilon, privacy_state, restore_privacy
from coordinator.models.spec import ModelSpec, load_spec, spec_from_dict
from coordinator.models.torch_model import build_module, wire_weights
from coordinator.models.weights_file import read_weights
from coordinator.persistence.store import RoundRecord, RunInfo, Store
from coordinator.protocol.tensors import decode_tensors, encode_tensors
from coordinator.settings import Settings

log = logging.getLogger(__name__)


class RunSink(Protocol):
    """Where a run's results go. Called from the run loop's thread."""

    def on_round(self, run_id: str, record: RoundRecord, checkpoint: Sequence[bytes | memoryview]) -> None:
        """A round completed: `checkpoint` is the new global model as safetensors, in parts. Commit both together."""
        ...

    def on_end(self, run_id: str, state: str, message: str) -> None:
        """The run is over: `state` is "completed", "stopped" or "failed". Called once."""
        ...


class RunLoop:
    def __init__(self, settings: Settings, store: Store, nodes: Nodes, status: RunStatus, sink: RunSink) -> None:
        self.control = RunControl()
        self.store = store
        self.nodes = nodes
        self.status = status
        self.sink = sink
        self.error: BaseException | None = None
        self.run, self.settings = self._open_run(settings)
        self.spec: ModelSpec = spec_from_dict(self.run.model_spec)
        stored_schema = self.run.settings.get("data_schema")
        self.data_schema = None if stored_schema is None else DataSchema.from_dict(stored_schema)
        self.evaluation = CentralEvaluation(self.spec, self.settings.test_data, self.data_schema)
        status.update(
            run_id=self.run.id,
            model=self.spec.name,
            strategy=self.settings.strategy,
            total_rounds=self.run.num_rounds,
            current_round=self.run.completed_rounds,
            history=[r.to_dict() for r in store.rounds(self.run.id)],
            dp={"clip": self.settings.dp_clip, "noise": self.settings.dp_noise, "delta": self.settings.dp_delta}
            if self.settings.dp
            else None,
            data=stored_schema,
            input_shape=list(self.spec.input_shape),
        )
        self._phases: dict[str, PhaseReport] = {}
        self.grid = NodeGrid(
            nodes,
            self.spec,
            self.run.id,
            round_offset=self.run.completed_rounds,
            uniform_weights=self.settings.dp,
            limits=ReplyLimits(self.settings.max_examples_per_client, self.settings.update_norm_bound),
            min_clients=self.settings.min_clients,
            streaming=self.settings.streaming,
            overselect=self.settings.overselect,
            max_updates=max_updates(self.settings, self.spec),
            weights_encoding=self.settings.weights_encoding,  # type: ignore[arg-type]
            control=self.control,
            round_lr=RoundLr(settings.lr, settings.round_lr_schedule, settings.round_lr_gamma, settings.rounds),
            data_schema=None if self.data_schema is None else self.data_schema.to_dict(),
            on_phase=self._phase_ended,
            resume_grace=self.settings.resume_grace,
        )
        self._strategy: Strategy | None = None
        self._initial: ArrayRecord | None = None
        self._round_start = time.time()

    def _open_run(self, settings: Settings) -> tuple[RunInfo, Settings]:
        run = None if settings.new_run else self.store.unfinished_run()
        if run is not None:
            # What to train comes from the database; where to serve comes from this invocation.
            stored = {**run.settings, **{k: getattr(settings, k) for k in Settings.SERVING}}
            log.info("resuming run %s after round %d of %d", run.id, run.completed_rounds, run.num_rounds)
            return run, Settings.from_dict(stored)
        spec = load_spec(settings.model)
        if settings.augmentation().on and (len(spec.input_shape) != 3 or spec.input_dtype != "float32"):
            raise ValueError(f"--augment-* is for image inputs [C, H, W]; {spec.name} takes {list(spec.input_shape)}")
        module = build_module(spec, seed=settings.seed)
        weights = read_weights(settings.init, spec) if settings.init else wire_weights(module)
        schema = run_data_schema(spec, settings.test_data, settings.label_column, settings.classes)
        stored = {**settings.to_dict(), "data_schema": None if schema is None else schema.to_dict()}
        run = self.store.create_run(spec.raw, stored, encode_tensors(weights))
        log.info("new run %s: %s, %d rounds, strategy %s", run.id, spec.name, settings.rounds, settings.strategy)
        return run, settings

    def run_to_end(self) -> None:
        """Blocking: run every remaining round; then tell the sink how the run ended. Never raises."""
        try:
            self._run_rounds()
        except RunStopped:
            log.warning("run %s stopped by request", self.run.id)
            self._end("stopped", "stopped by the operator")
        except BaseException as exc:
            log.exception("the run failed")
            self.error = exc
            self._end("failed", f"{type(exc).__name__}: {exc}")
        else:
            self._end("completed", "run complete")

    def _end(self, state: str, message: str) -> None:
        self.grid.detach()
        self.sink.on_end(self.run.id, state, message)

    def wait_for_clients(self) -> None:
        """Block until enough clients are connected, saying so every 10 s (and on the status page)."""
        needed = max(self.settings.min_clients, self.settings.clients_per_round, self.settings.wait_for)
        last_log: float | None = None
        while self.nodes.count() < needed:
            self.control.checkpoint()
            now = time.monotonic()
            if last_log is None or now - last_log >= 10:
                msg = f"waiting for clients: {self.nodes.count()} connected, {needed} needed to start"
                log.warning(msg)
                self.status.update(state="waiting", message=msg)
                last_log = now
            time.sleep(0.2)

    def _run_rounds(self) -> None:
        done, total = self.run.completed_rounds, self.run.num_rounds
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
        if done >= total:
            return
        _, weights = self.store.checkpoint(self.run.id)
        initial = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in decode_tensors(weights).items()})
        del weights  # Flower's record is the copy the run goes on from
        self._initial = initial
        self.wait_for_clients()
        self.status.update(state="running", message="")
        self._strategy = build_strategy(self.settings)
        self._restore_privacy(self._strategy)
        self._round_start = time.time()
        self._strategy.start(
            self.grid,
            initial,
            num_rounds=total - done,
            timeout=self.settings.round_timeout,
            train_config=ConfigRecord(self.settings.train_config()),
            evaluate_config=ConfigRecord({}),
            evaluate_fn=self._after_round,
        )

    def _restore_privacy(self, strategy: Strategy) -> None:
        """A resumed run's accountant starts from what the stored rounds spent, so ε never goes backwards."""
        done = self.store.rounds(self.run.id)
        states = [r.privacy for r in done if r.privacy is not None]
        restore_privacy(strategy, states[-1] if states else None, sum(r.epsilon is not None for r in done))

    def _phase_ended(self, report: PhaseReport) -> None:
        self._phases[report.kind] = report

    def _after_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        if self._initial is not None and arrays is not self._initial:
            # Strategy.start holds its initial record to the end of the run; nothing reads it once
            # there is a newer global model, so its weights (a model) are given back.
            self._initial.clear()
            self._initial = None
        weights = self.grid.encoder.encode(arrays)  # the next round's broadcast reuses this encoding
        scores = self.evaluation.scores(weights.tensors) if self._evaluates(server_round) else {}
        accuracy, loss = scores.get("accuracy"), scores.get("loss")
        reply = MetricRecord(scores)  # type: ignore[arg-type]
        if server_round == 0:
            log.info("starting from round %d: accuracy %s", self.grid.round_offset, _fmt(accuracy))
            return reply
        round_number = self.grid.round_offset + server_round
        phases, self._phases = self._phases, {}
        train = _of_round(phases.get("train"), round_number)
        evaluation = _of_round(phases.get("evaluate"), round_number)
        metrics: dict[str, object] = {k: v for k, v in scores.items() if k not in ("accuracy", "loss")}
        if train is not None:
            metrics.update(
                train_loss=train.mean("train_loss"),
                client_seconds_max=train.max("train_seconds"),
                failures=train.failures,
                bytes_out=train.bytes_out,
                bytes_in=train.bytes_in,
                selected=train.sent,
                replied=train.ok,
                dropped=train.dropped,
                late=train.late,
                resumed=train.resumed,
                rejected=train.rejected,
                clipped=train.clipped,
                aggregate_seconds=train.aggregate_seconds,
                train_phase_seconds=train.seconds,
            )
        if evaluation is not None:
            metrics.update(federated_accuracy=evaluation.mean("accuracy"), federated_loss=evaluation.mean("loss"))
        now = time.time()
        record = RoundRecord(
            round=round_number,
            seconds=now - self._round_start,
            clients=train.ok if train else 0,
            failures=len(train.failures) if train else 0,
            accuracy=accuracy,
            loss=loss,
            epsilon=epsilon(self._strategy) if self._strategy is not None else None,
            metrics=metrics,
            privacy=privacy_state(self._strategy) if self._strategy is not None else None,
        )
        self._round_start = now
        self.sink.on_round(self.run.id, record, weights.payload())
        return reply

    def _evaluates(self, server_round: int) -> bool:
        every, round_number = self.settings.evaluate_every, self.grid.round_offset + server_round
        return every > 0 and (round_number % every == 0 or round_number == self.run.num_rounds)


# What one kept update costs a robust strategy: Flower's record of it, its decoded arrays, and the stack
# the strategy aggregates (median, trimmed mean, Krum distances) over.
ROBUST_COPIES = 3


def max_updates(settings: Settings, spec: ModelSpec) -> int | None:
    """How many updates a round may keep within --max-memory; None when they are folded as they arrive.

    Raises ValueError when a fixed cohort (--clients-per-round) of a robust strategy cannot fit.
    """
    if settings.streaming:
        return None
    per_update = ROBUST_COPIES * 4 * sum(math.prod(s) for s in spec.wire_shapes().values())
    fits = settings.max_memory // per_update
    if fits < max(settings.clients_per_round, settings.min_clients, 1):
        raise ValueError(
            f"{settings.strategy} keeps every update of a round ({per_update / 2**20:.1f} MiB each with"
            f" {spec.name}): {max(settings.clients_per_round, settings.min_clients)} clients need more than"
            f" --max-memory {settings.max_memory / 2**30:.2f} GiB, which holds {fits}"
        )
    return int(fits)


def _of_round(report: PhaseReport | None, round_number: int) -> PhaseReport | None:
    return report if report is not None and report.round == round_number else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
