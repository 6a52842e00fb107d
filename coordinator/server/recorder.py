"""Where a run's results go: the store, the live status, Prometheus and the log (the run loop's `RunSink`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from coordinator.federation.nodes import Nodes
from coordinator.federation.status import RunStatus
from coordinator.persistence.store import RoundRecord, Store
from coordinator.server.memory import trim_heap
from coordinator.server.metrics import Metrics

log = logging.getLogger(__name__)


class RunRecorder:
    def __init__(self, store: Store, status: RunStatus, metrics: Metrics, nodes: Nodes) -> None:
        self.store = store
        self.status = status
        self.metrics = metrics
        self.nodes = nodes

    def on_round(self, run_id: str, record: RoundRecord, checkpoint: Sequence[bytes | memoryview]) -> None:
        self.store.record_round(run_id, record, checkpoint)  # the round and its checkpoint, in one transaction
        trim_heap()  # the round's buffers are freed: give their memory back
        self.status.add_round(record.to_dict())
        self.metrics.rounds.inc()
        self.metrics.round_seconds.observe(record.seconds)
        self.metrics.current_round.set(record.round)
        if record.accuracy is not None:
            self.metrics.accuracy.set(record.accuracy)
        if record.epsilon is not None:
            self.metrics.epsilon.set(record.epsilon)
        log.info(
            "round %d/%d: accuracy %s, loss %s, %d clients, %d failed, %.1f s%s",
            record.round,
            self.status.total_rounds,
            _fmt(record.accuracy),
            _fmt(record.loss),
            record.clients,
            record.failures,
            record.seconds,
            "" if record.epsilon is None else f", ε={record.epsilon:.3f}",
        )

    def on_end(self, run_id: str, state: str, message: str) -> None:
        self.store.set_state(run_id, state)
        self.status.update(state=state, message=message)
        self.status.finished.set()
        self.nodes.close_all()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
