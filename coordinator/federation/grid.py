"""A Flower `Grid` whose nodes are whatever implements `Nodes`.

Stock `flwr.serverapp` strategies run on it unchanged. The grid

* serialises each phase's broadcast once (and each round's global weights once,
  through `WeightsEncoder`) and sends the same bytes to every node;
* checks every reply with `check_reply`, so a bad client becomes an error reply
  instead of aborting the run (strategies raise on inconsistent replies), and the
  client is told why. Whatever goes wrong while one reply is checked or decoded,
  even an exception nobody foresaw, stays that client's failure: nothing one
  reply holds escapes `send_and_receive`;
* answers a task with an error at once when its node is lost;
* hands each phase's `PhaseReport` to `on_phase` when the phase ends.

Strategies call it from their own thread; `deliver` and `node_lost` come from
whichever thread the nodes live on (the event loop for WebSockets). All shared
state sits behind one condition variable.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flwr.app import ConfigRecord, Error, Message, RecordDict
from flwr.common.constant import ErrorCode as FlowerErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from coordinator.federation.control import RunControl
from coordinator.federation.nodes import Nodes
from coordinator.federation.phases import PhaseReport
from coordinator.federation.replies import DEFAULT_LIMITS, Kind, Lost, Reply, ReplyLimits, check_reply
from coordinator.federation.weights import WeightsEncoder
from coordinator.models.spec import ModelSpec
from coordinator.protocol import messages as wire
from coordinator.protocol.errors import ErrorCode, ProtocolError
from coordinator.protocol.tensors import Tensors

log = logging.getLogger(__name__)

# A client's own error message is shown in the round's failures; keep what it can put there short.
MAX_REASON = 200


@dataclass(frozen=True)
class _Broadcast:
    """One phase's task, shared by every node it goes to."""

    task_id: str
    kind: Kind
    frame: bytes
    global_weights: Tensors
    report: PhaseReport


@dataclass
class _Pending:
    message: Message
    node_id: int
    broadcast: _Broadcast
    reply: Reply | None = None


class NodeGrid(Grid):
    def __init__(
        self,
        nodes: Nodes,
        spec: ModelSpec,
        run_id: str,
        *,
        round_offset: int = 0,
        uniform_weights: bool = False,
        limits: ReplyLimits = DEFAULT_LIMITS,
        min_clients: int = 1,
        control: RunControl | None = None,
        encoder: WeightsEncoder | None = None,
        on_phase: Callable[[PhaseReport], None] = lambda report: None,
    ) -> None:
        self.control = control or RunControl()
        self.encoder = encoder or WeightsEncoder()
        self.nodes = nodes
        self.spec = spec
        self.run_id = run_id
        self.round_offset = round_offset
        self.uniform_weights = uniform_weights
        self.limits = limits
        self.min_clients = min_clients
        self._on_phase = on_phase
        self._shapes = spec.wire_shapes()
        self._run = Run.create_empty(1)
        self._cond = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._by_task: dict[tuple[int, str], str] = {}
        self._last_wait_log = 0.0
        nodes.on_lost(self.node_lost)

    def detach(self) -> None:
        """Stop listening for lost nodes (the run is over)."""
        self.nodes.off_lost(self.node_lost)

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
        ids = self.nodes.node_ids()
        now = time.time()
        if len(ids) < self.min_clients and now - self._last_wait_log > 10:
            self._last_wait_log = now
            log.warning("waiting for clients: %d connected, %d needed", len(ids), self.min_clients)
        return ids

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids: list[str] = []
        broadcasts: dict[int, _Broadcast] = {}  # id(content) → the phase's shared task
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = message_id = uuid.uuid4().hex
            key = id(msg.content)
            if key not in broadcasts:
                broadcasts[key] = self._broadcast(msg)
            broadcast = broadcasts[key]
            node_id = msg.metadata.dst_node_id
            with self._cond:
                self._pending[message_id] = _Pending(msg, node_id, broadcast)
                self._by_task[(node_id, broadcast.task_id)] = message_id
                broadcast.report.sent += 1
                broadcast.report.bytes_out += len(broadcast.frame)
            if not self.nodes.send_task(node_id, broadcast.task_id, broadcast.frame):
                self._resolve(message_id, Lost())
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
            try:
                out.append(self._to_flower(pending, pending.reply))
            except Exception as exc:  # one reply must never end the run
                out.append(self._refuse(pending, ProtocolError(ErrorCode.INTERNAL, _unexpected(exc))))
        return out

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        self.control.checkpoint()  # a paused run waits here, between phases
        ids = list(self.push_messages(messages))
        with self._cond:
            reports = list(
                {id(p.broadcast.report): p.broadcast.report for p in map(self._pending.get, ids) if p}.values()
            )
        self._wait(ids, timeout)
        if self.control.stopping:
            with self._cond:
                for i in ids:
                    self._forget(i)
            self.control.checkpoint()
        replies = list(self.pull_messages(ids))
        with self._cond:
            late = [self._forget(i) for i in ids if i in self._pending]
            for p in late:
                p.broadcast.report.failures.append(f"node {p.node_id}: no reply within {timeout} s")
        for report in reports:
            self._on_phase(report)
        return replies

    # Called from the nodes' thread ---------------------------------------------
    def deliver(self, node_id: int, reply: wire.Result | wire.Error) -> bool:
        """A node answered; False if no such task is waiting for it (late, or never sent)."""
        if not isinstance(reply.reply_to, str):  # other Nodes implementations may not have parsed it as ours does
            return False
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
            self._resolve(message_id, Lost())

    # Internals ---------------------------------------------------------------
    def _wait(self, ids: list[str], timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not all(self._pending[i].reply is not None for i in ids) and not self.control.stopping:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                self._cond.wait(min(left, 1.0) if left is not None else 1.0)

    def _resolve(self, message_id: str, reply: Reply) -> None:
        with self._cond:
            pending = self._pending.get(message_id)
            if pending is not None and pending.reply is None:
                pending.reply = reply
                self._cond.notify_all()

    def _forget(self, message_id: str) -> _Pending:
        pending = self._pending.pop(message_id)
        self._by_task.pop((pending.node_id, pending.broadcast.task_id), None)
        return pending

    def _broadcast(self, msg: Message) -> _Broadcast:
        kind: Kind = "train" if msg.metadata.message_type.startswith("train") else "evaluate"
        weights = self.encoder.encode(next(iter(msg.content.array_records.values())))
        config = next(iter(msg.content.config_records.values()), ConfigRecord())
        round_number = self.round_offset + int(config.get("server-round", 0))  # type: ignore[arg-type]
        wire_config = {k: v for k, v in config.items() if isinstance(v, bool | int | float | str)}
        task_id = uuid.uuid4().hex
        task = wire.Task(kind, task_id, self.run_id, round_number, self.spec.raw, wire_config, weights.safetensors)
        return _Broadcast(task_id, kind, wire.encode(task), weights.tensors, PhaseReport(kind, round_number))

    def _to_flower(self, pending: _Pending, reply: Reply) -> Message:
        report = pending.broadcast.report
        if isinstance(reply, Lost):
            return self._failed(pending, FlowerErrorCode.NODE_UNAVAILABLE, reply.reason)
        if isinstance(reply, wire.Error):
            reason = f"{reply.code}: {reply.message}"[:MAX_REASON]
            return self._failed(pending, FlowerErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason)
        with self._cond:
            report.bytes_in += len(reply.delta)
        try:
            accepted = check_reply(
                pending.broadcast.kind,
                reply,
                pending.broadcast.global_weights,
                self._shapes,
                self.limits,
                uniform_weights=self.uniform_weights,
            )
        except ProtocolError as exc:
            return self._refuse(pending, exc)
        except Exception as exc:  # a decoder's unforeseen failure is still this client's fault
            return self._refuse(pending, ProtocolError(ErrorCode.INVALID_UPDATE, _unexpected(exc)))
        with self._cond:
            report.ok += 1
            report.clipped += accepted.clipped
            report.client_metrics.append({"num_examples": reply.num_examples, **reply.metrics})
        return Message(accepted.record, reply_to=pending.message)

    def _refuse(self, pending: _Pending, exc: ProtocolError) -> Message:
        """Count and log a refused reply, tell its client why (if it is still there), and fail its task."""
        log.warning("rejected reply from node %d: %s", pending.node_id, exc)
        with self._cond:
            pending.broadcast.report.rejected += 1
        error = wire.Error(exc.code.value, exc.message[:MAX_REASON], pending.broadcast.task_id)
        try:
            self.nodes.reject(pending.node_id, error)
        except Exception:  # telling the client is a courtesy; the refusal stands regardless
            log.warning("could not tell node %d its reply was refused", pending.node_id, exc_info=True)
        return self._failed(pending, FlowerErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(exc)[:MAX_REASON])

    def _failed(self, pending: _Pending, code: int, reason: str) -> Message:
        with self._cond:
            pending.broadcast.report.failures.append(f"node {pending.node_id}: {reason}")
        return Message(Error(code, reason), reply_to=pending.message)


def _unexpected(exc: Exception) -> str:
    return f"the reply could not be checked ({type(exc).__name__})"
