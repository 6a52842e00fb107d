"""A Flower `Grid` whose nodes are the connected WebSocket clients.

Stock `flwr.serverapp` strategies run on it unchanged. The grid

* serialises each round's broadcast once and sends the same bytes to every node;
* turns each client's delta into weights (global + delta), which is what the
  strategies and Flower's DP wrappers expect;
* validates every reply at the boundary, so a bad client becomes an error reply
  instead of aborting the run (strategies raise on inconsistent replies);
* answers a task with an error at once when its client disconnects.

Strategies call it from their own thread; sessions deliver replies from the
event loop. All shared state sits behind one condition variable.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode as FlowerErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from coordinator.models.spec import ModelSpec
from coordinator.protocol import messages as wire
from coordinator.protocol.errors import ErrorCode, ProtocolError
from coordinator.protocol.tensors import Tensors, check_tensors, decode_tensors, encode_tensors
from coordinator.server.clients import ClientRegistry
from coordinator.server.control import RunControl

log = logging.getLogger(__name__)

MAX_NUM_EXAMPLES = 100_000_000
LOST = object()  # marks a task whose client disconnected


@dataclass
class _Pending:
    message: Message
    node_id: int
    task_id: str
    kind: str
    global_weights: Tensors
    reply: Any = None  # wire.Result | wire.Error | LOST once something came back


@dataclass
class PhaseReport:
    """What happened to one train or evaluate phase, for the round's record."""

    kind: str
    round: int
    started: float = field(default_factory=time.time)
    sent: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    client_metrics: list[dict[str, float]] = field(default_factory=list)
    bytes_out: int = 0
    bytes_in: int = 0

    def mean(self, key: str) -> float | None:
        values = [m[key] for m in self.client_metrics if key in m]
        return float(np.mean(values)) if values else None

    def max(self, key: str) -> float | None:
        values = [m[key] for m in self.client_metrics if key in m]
        return float(np.max(values)) if values else None


class WebSocketGrid(Grid):
    def __init__(
        self,
        clients: ClientRegistry,
        spec: ModelSpec,
        run_id: str,
        *,
        round_offset: int = 0,
        uniform_weights: bool = False,
        min_clients: int = 1,
        control: RunControl | None = None,
    ) -> None:
        self.control = control or RunControl()
        self.clients = clients
        self.spec = spec
        self.run_id = run_id
        self.round_offset = round_offset
        self.uniform_weights = uniform_weights
        self.min_clients = min_clients
        self._shapes = spec.wire_shapes()
        self._run = Run.create_empty(1)
        self._cond = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._by_task: dict[tuple[int, str], str] = {}
        self._last_wait_log = 0.0
        self.reports: dict[tuple[str, int], PhaseReport] = {}
        clients.on_lost(self.node_lost)

    def detach(self) -> None:
        """Stop listening to the registry (the run is over)."""
        self.clients.off_lost(self.node_lost)

    # Grid API -----------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        ids = self.clients.node_ids()
        now = time.time()
        if len(ids) < self.min_clients and now - self._last_wait_log > 10:
            self._last_wait_log = now
            log.warning("waiting for clients: %d connected, %d needed", len(ids), self.min_clients)
        return ids

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids: list[str] = []
        frames: dict[int, tuple[str, str, bytes, Tensors]] = {}  # id(content) → shared broadcast
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = message_id = uuid.uuid4().hex
            key = id(msg.content)
            if key not in frames:
                frames[key] = self._broadcast(msg)
            task_id, kind, frame, global_weights = frames[key]
            node_id = msg.metadata.dst_node_id
            pending = _Pending(msg, node_id, task_id, kind, global_weights)
            report = self._report(kind, msg)
            with self._cond:
                self._pending[message_id] = pending
                self._by_task[(node_id, task_id)] = message_id
            report.sent += 1
            report.bytes_out += len(frame)
            if not self.clients.send_task(node_id, task_id, frame):
                self._resolve(message_id, LOST)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        out: list[Message] = []
        for message_id in message_ids:
            with self._cond:
                pending = self._pending.get(message_id)
                if pending is None or pending.reply is None:
                    continue
                self._forget(message_id)
            out.append(self._to_flower(pending))
        return out

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        self.control.checkpoint()  # a paused run waits here, between phases
        ids = list(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not all(self._pending[i].reply is not None for i in ids) and not self.control.stopping:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(min(left, 1.0) if left is not None else 1.0)
        if self.control.stopping:
            with self._cond:
                for i in ids:
                    self._forget(i)
            self.control.checkpoint()
        replies = list(self.pull_messages(ids))
        with self._cond:
            late = [i for i in ids if i in self._pending]
            for i in late:
                p = self._pending[i]
                self._report(p.kind, p.message).failures.append(f"node {p.node_id}: no reply within {timeout} s")
                self._forget(i)
        return replies

    # Called from the event loop --------------------------------------------
    def deliver(self, node_id: int, reply: wire.Result | wire.Error) -> bool:
        """A client answered; False if no such task is waiting (late or never sent)."""
        assert reply.reply_to is not None
        with self._cond:
            message_id = self._by_task.get((node_id, reply.reply_to))
        if message_id is None:
            return False
        self._resolve(message_id, reply)
        return True

    def node_lost(self, node_id: int) -> None:
        with self._cond:
            lost = [i for i, p in self._pending.items() if p.node_id == node_id and p.reply is None]
        for message_id in lost:
            self._resolve(message_id, LOST)

    # Internals ---------------------------------------------------------------
    def _resolve(self, message_id: str, reply: Any) -> None:
        with self._cond:
            pending = self._pending.get(message_id)
            if pending is not None and pending.reply is None:
                pending.reply = reply
                self._cond.notify_all()

    def _forget(self, message_id: str) -> None:
        pending = self._pending.pop(message_id)
        self._by_task.pop((pending.node_id, pending.task_id), None)

    def _round(self, msg: Message) -> int:
        config = next(iter(msg.content.config_records.values()), ConfigRecord())
        return self.round_offset + int(config.get("server-round", 0))  # type: ignore[arg-type]

    def _report(self, kind: str, msg: Message) -> PhaseReport:
        key = (kind, self._round(msg))
        with self._cond:
            if key not in self.reports:
                self.reports[key] = PhaseReport(kind, key[1])
            return self.reports[key]

    def _broadcast(self, msg: Message) -> tuple[str, str, bytes, Tensors]:
        kind = "train" if msg.metadata.message_type.startswith("train") else "evaluate"
        arrays = next(iter(msg.content.array_records.values()))
        weights = {name: np.asarray(a.numpy(), dtype=np.float32) for name, a in arrays.items()}
        config = next(iter(msg.content.config_records.values()), ConfigRecord())
        wire_config = {k: v for k, v in config.items() if isinstance(v, bool | int | float | str)}
        task_id = uuid.uuid4().hex
        task = wire.Task(
            kind, task_id, self.run_id, self._round(msg), self.spec.raw, wire_config, encode_tensors(weights)
        )
        return task_id, kind, wire.encode(task), weights

    def _to_flower(self, pending: _Pending) -> Message:
        report = self._report(pending.kind, pending.message)
        reply = pending.reply
        try:
            if reply is LOST:
                raise _Failed(FlowerErrorCode.NODE_UNAVAILABLE, "client disconnected")
            if isinstance(reply, wire.Error):
                raise _Failed(FlowerErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{reply.code}: {reply.message}")
            report.bytes_in += len(reply.delta)
            content = self._validated(pending, reply)
        except ProtocolError as exc:
            log.warning("rejected reply from node %d: %s", pending.node_id, exc)
            self.clients.send_error(pending.node_id, wire.Error(exc.code.value, exc.message, pending.task_id))
            report.failures.append(f"node {pending.node_id}: {exc}")
            return Message(Error(FlowerErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(exc)), reply_to=pending.message)
        except _Failed as exc:
            report.failures.append(f"node {pending.node_id}: {exc.reason}")
            return Message(Error(exc.code, exc.reason), reply_to=pending.message)
        report.ok += 1
        report.client_metrics.append({"num_examples": reply.num_examples, **reply.metrics})
        return Message(content, reply_to=pending.message)

    def _validated(self, pending: _Pending, reply: wire.Result) -> RecordDict:
        if not 0 < reply.num_examples <= MAX_NUM_EXAMPLES:
            raise ProtocolError(ErrorCode.INVALID_UPDATE, f"num_examples {reply.num_examples} is not plausible")
        bad = [k for k, v in reply.metrics.items() if not math.isfinite(v)]
        if bad:
            raise ProtocolError(ErrorCode.INVALID_UPDATE, f"metrics {bad} are not finite")
        weight = 1 if self.uniform_weights else reply.num_examples
        if pending.kind == "evaluate":
            missing = {"loss", "accuracy"} - set(reply.metrics)
            if missing or reply.delta:
                raise ProtocolError(
                    ErrorCode.INVALID_MESSAGE, "an evaluate result carries loss and accuracy, no tensors"
                )
            metrics: dict[str, int | float | list[int] | list[float]] = {
                "num-examples": weight,
                "eval_loss": reply.metrics["loss"],
                "eval_acc": reply.metrics["accuracy"],
            }
            return RecordDict({"metrics": MetricRecord(metrics)})
        delta = decode_tensors(reply.delta)
        check_tensors(delta, self._shapes)
        weights = {name: pending.global_weights[name] + delta[name] for name in pending.global_weights}
        if not all(np.isfinite(w).all() for w in weights.values()):
            raise ProtocolError(ErrorCode.INVALID_UPDATE, "global + delta overflows float32")
        # Key sets must be equal across replies, or the strategy aborts the run: send only what it reads.
        return RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}),
                "metrics": MetricRecord({"num-examples": weight}),
            }
        )


class _Failed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
