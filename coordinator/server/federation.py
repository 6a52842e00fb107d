"""The run loop: create or resume a run, then let a Flower strategy drive rounds over the grid.

Runs in its own thread, because `Strategy.start` blocks. After every round it
evaluates the global model on the held-out test set and commits the round and
its checkpoint in one transaction, so a killed coordinator resumes after the
last completed round.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
from flwr.supercore.task_identity import TaskIdentity

from coordinator.data.mnist import load_split
from coordinator.models.local_training import evaluate
from coordinator.models.spec import ModelSpec, load_spec, spec_from_dict
from coordinator.models.torch_model import build_module, load_wire_weights, wire_weights
from coordinator.models.weights_file import read_weights
from coordinator.persistence.store import RoundRecord, RunInfo, Store
from coordinator.protocol.tensors import decode_tensors, encode_tensors
from coordinator.server.clients import ClientRegistry
from coordinator.server.control import RunControl
from coordinator.server.grid import WebSocketGrid
from coordinator.server.metrics import Metrics
from coordinator.server.status import RunStatus
from coordinator.server.strategies import build_strategy, epsilon
from coordinator.settings import Settings

log = logging.getLogger(__name__)


class Federation:
    def __init__(
        self, settings: Settings, store: Store, clients: ClientRegistry, status: RunStatus, metrics: Metrics
    ) -> None:
        self.metrics = metrics
        self.control = RunControl()
        self.store = store
        self.clients = clients
        self.status = status
        self.run, self.settings = self._open_run(settings)
        self.spec: ModelSpec = spec_from_dict(self.run.model_spec)
        self.module = build_module(self.spec)
        self.test = load_split("test") if _is_mnist(self.spec) else None
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
        )
        self.grid = WebSocketGrid(
            clients,
            self.spec,
            self.run.id,
            round_offset=self.run.completed_rounds,
            uniform_weights=self.settings.dp,
            min_clients=self.settings.min_clients,
            control=self.control,
        )

    def _open_run(self, settings: Settings) -> tuple[RunInfo, Settings]:
        run = None if settings.new_run else self.store.unfinished_run()
        if run is not None:
            # What to train comes from the database; where to serve comes from this invocation.
            stored = {**run.settings, **{k: getattr(settings, k) for k in Settings.SERVING}}
            log.info("resuming run %s after round %d of %d", run.id, run.completed_rounds, run.num_rounds)
            return run, Settings.from_dict(stored)
        spec = load_spec(settings.model)
        module = build_module(spec, seed=settings.seed)
        weights = read_weights(settings.init, spec) if settings.init else wire_weights(module)
        run = self.store.create_run(spec.raw, settings.to_dict(), encode_tensors(weights))
        log.info("new run %s: %s, %d rounds, strategy %s", run.id, spec.name, settings.rounds, settings.strategy)
        return run, settings

    def wait_for_clients(self) -> None:
        """Block until enough clients are connected, saying so every 10 s (and on the status page)."""
        needed = max(self.settings.min_clients, self.settings.clients_per_round, self.settings.wait_for)
        last_log: float | None = None
        while self.clients.count() < needed:
            self.control.checkpoint()
            now = time.monotonic()
            if last_log is None or now - last_log >= 10:
                msg = f"waiting for clients: {self.clients.count()} connected, {needed} needed to start"
                log.warning(msg)
                self.status.update(state="waiting", message=msg)
                last_log = now
            time.sleep(0.2)

    def run_rounds(self) -> None:
        """Blocking: run every remaining round, then mark the run completed."""
        done, total = self.run.completed_rounds, self.run.num_rounds
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
        if done >= total:
            self._finish()
            return
        _, weights = self.store.checkpoint(self.run.id)
        global_weights = decode_tensors(weights)
        self.wait_for_clients()
        self.status.update(state="running", message="")
        strategy = build_strategy(self.settings)
        self._strategy = strategy
        self._round_start = time.time()
        strategy.start(
            self.grid,
            ArrayRecord({k: _array(v) for k, v in global_weights.items()}),
            num_rounds=total - done,
            timeout=self.settings.round_timeout,
            train_config=ConfigRecord(self.settings.train_config()),
            evaluate_config=ConfigRecord({}),
            evaluate_fn=self._after_round,
        )
        self._finish()

    def _finish(self) -> None:
        self.grid.detach()
        self.store.set_state(self.run.id, "completed")
        self.status.update(state="completed", message="run complete")
        self.status.finished.set()
        self.clients.close_all()

    def _after_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        weights = {k: np.asarray(a.numpy(), dtype=np.float32) for k, a in arrays.items()}
        accuracy, loss = self._evaluate(weights)
        if server_round == 0:
            log.info("starting from round %d: accuracy %s", self.grid.round_offset, _fmt(accuracy))
            return MetricRecord({} if accuracy is None else {"accuracy": accuracy, "loss": loss or 0.0})
        round_number = self.grid.round_offset + server_round
        train = self.grid.reports.pop(("train", round_number), None)
        evaluation = self.grid.reports.pop(("evaluate", round_number), None)
        metrics: dict[str, object] = {}
        if train is not None:
            metrics.update(
                train_loss=train.mean("train_loss"),
                client_seconds_max=train.max("train_seconds"),
                failures=train.failures,
                bytes_out=train.bytes_out,
                bytes_in=train.bytes_in,
                sent=train.sent,
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
            epsilon=epsilon(self._strategy),
            metrics=metrics,
        )
        self._round_start = now
        self.store.record_round(self.run.id, record, encode_tensors(weights))
        self.status.add_round(record.to_dict())
        self.metrics.rounds.inc()
        self.metrics.round_seconds.observe(record.seconds)
        self.metrics.current_round.set(round_number)
        if accuracy is not None:
            self.metrics.accuracy.set(accuracy)
        if record.epsilon is not None:
            self.metrics.epsilon.set(record.epsilon)
        log.info(
            "round %d/%d: accuracy %s, loss %s, %d clients, %d failed, %.1f s%s",
            round_number,
            self.run.num_rounds,
            _fmt(accuracy),
            _fmt(loss),
            record.clients,
            record.failures,
            record.seconds,
            "" if record.epsilon is None else f", ε={record.epsilon:.3f}",
        )
        return MetricRecord({} if accuracy is None else {"accuracy": accuracy, "loss": loss or 0.0})

    def _evaluate(self, weights: dict[str, np.ndarray]) -> tuple[float | None, float | None]:
        if self.test is None:
            return None, None
        load_wire_weights(self.module, weights)
        loss, accuracy = evaluate(self.module, self.test.x, self.test.y)
        return accuracy, loss


def _array(value: np.ndarray) -> Array:
    return Array(np.ascontiguousarray(value))


def _is_mnist(spec: ModelSpec) -> bool:
    return spec.input_shape in ((1, 28, 28), (784,)) and spec.num_classes == 10


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
