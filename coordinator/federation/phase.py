"""One train or evaluate phase of a round: its tasks, how their replies are taken in, and when it is over.

A phase is one broadcast: the same task frame goes to every node of its cohort. Each reply
is checked the moment it arrives (`take`) and then either

* folded into the phase's `RunningMean` and dropped (streaming: FedAvg-family train phases),
  so the phase holds one model-sized sum however many clients answer; or
* kept as that client's record (evaluate phases, and robust strategies, which need every
  update: O(cohort × model) memory, bounded by the grid's `max_updates`).

A phase is complete when every task is resolved or when `quorum` replies were accepted
(the cohort, when the grid over-selected). `close` then cancels what is still outstanding:
tasks cut at the quorum are *dropped*, tasks still running at the deadline are *late*;
their nodes are told with `task_cancelled`. A reply arriving after that is refused as unknown.

A task whose node's connection ended may be held for it (`away`): its client keeps its jobs
across reconnects (SPEC §4.2). It stays open, so the phase waits for it, until the node is
`back` (its reply then counts as any other) or `resume_grace` seconds pass (`expire` fails it
as lost), or the phase ends first.

Not thread-safe on its own: the grid calls every method under its condition variable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import Error, Message, RecordDict
from flwr.common.constant import ErrorCode as FlowerErrorCode

from coordinator.federation.aggregation import RunningMean
from coordinator.federation.broadcast import Broadcast
from coordinator.federation.phases import PhaseReport
from coordinator.federation.replies import (
    DEFAULT_LIMITS,
    Kind,
    Lost,
    Reply,
    ReplyLimits,
    check_reply,
    check_update,
)
from coordinator.federation.shards import Partial, ShardTask
from coordinator.federation.weights import EncodedWeights
from coordinator.protocol import messages as wire
from coordinator.protocol.errors import ErrorCode, ProtocolError
from coordinator.protocol.tensors import Tensors

log = logging.getLogger(__name__)

# A client's own error message is shown in the round's failures; keep what it can put there short.
MAX_REASON = 200

Refuse = Callable[[int, wire.Error], None]  # tell a node its reply or task is refused or cancelled


@dataclass
class _Task:
    node_id: int
    message: Message  # the Flower message this task answers
    done: bool = False
    reply: Message | None = None  # per-client outcome (not kept for folded updates)


class Phase:
    def __init__(
        self,
        task_id: str,
        kind: Kind,
        global_weights: Tensors,
        report: PhaseReport,
        *,
        frame: Broadcast,
        shapes: dict[str, tuple[int, ...]],
        limits: ReplyLimits = DEFAULT_LIMITS,
        uniform_weights: bool = False,
        streaming: bool = False,
        refuse: Refuse = lambda node_id, error: None,
        resume_grace: float = 0.0,
    ) -> None:
        """`resume_grace`: how long a task is held for a node whose client keeps its jobs (0: not at all)."""
        self.task_id = task_id
        self.kind = kind
        self.global_weights = global_weights
        self.report = report
        self.frame = frame  # the encoded task, shared by every node's send, per weights encoding
        self.shapes = shapes
        self.limits = limits
        self.uniform_weights = uniform_weights
        self.fold = RunningMean(global_weights) if streaming and kind == "train" else None
        self.quorum: int | None = None
        self.closed = False
        self._refuse = refuse
        self.resume_grace = resume_grace
        self._tasks: dict[int, _Task] = {}
        self._open = 0  # tasks not yet resolved
        self._away: dict[int, float] = {}  # node → the monotonic time its open task is held until

    # Tasks --------------------------------------------------------------------
    def add_task(self, node_id: int, message: Message) -> None:
        self._tasks[node_id] = _Task(node_id, message)
        self._open += 1
        self.report.sent += 1

    def has_task(self, node_id: int) -> bool:
        task = self._tasks.get(node_id)
        return task is not None and not task.done and not self.closed

    @property
    def complete(self) -> bool:
        """Every task is resolved, or the quorum of accepted replies is in."""
        return self._open == 0 or (self.quorum is not None and self.report.ok >= self.quorum)

    # Replies --------------------------------------------------------------------
    def take(self, node_id: int, reply: Reply) -> bool:
        """Check and take in a node's reply (or its loss); False if it has no open task here."""
        if not self.has_task(node_id):
            return False
        task = self._tasks[node_id]
        task.done = True
        self._open -= 1
        self._away.pop(node_id, None)
        try:
            task.reply = self._outcome(task, reply)
        except ProtocolError as exc:
            task.reply = self._refused(task, exc)
        except Exception as exc:  # a decoder's unforeseen failure is still this client's fault
            task.reply = self._refused(task, ProtocolError(ErrorCode.INVALID_UPDATE, _unexpected(exc)))
        return True

    # Nodes away ----------------------------------------------------------------------
    def away(self, node_id: int, now: float) -> bool:
        """The node's connection ended, but its client keeps its jobs: hold its open task until `now` + the grace.

        False, holding nothing, without a grace or an open task of that node. A node still away keeps its
        first deadline.
        """
        if self.resume_grace <= 0 or not self.has_task(node_id):
            return False
        self._away.setdefault(node_id, now + self.resume_grace)
        return True

    def is_away(self, node_id: int) -> bool:
        """Whether the node's open task here is held for its return."""
        return node_id in self._away

    def back(self, node_id: int) -> bool:
        """The node took its open task up again on a new connection; False if it has none here."""
        if not self.has_task(node_id):
            return False
        self._away.pop(node_id, None)
        self.report.resumed += 1
        return True

    def expire(self, now: float) -> bool:
        """Fail, as lost, the tasks of nodes still away at `now`; True if there were any."""
        gone = [node_id for node_id, until in self._away.items() if until <= now]
        for node_id in gone:
            self.take(node_id, Lost(f"did not come back within {self.resume_grace:g} s"))
        return bool(gone)

    def next_expiry(self) -> float | None:
        """When the first task held for a node expires (monotonic); None if none is held."""
        return min(self._away.values(), default=None)

    def _outcome(self, task: _Task, reply: Reply) -> Message | None:
        report = self.report
        if isinstance(reply, Lost):
            return self._failed(task, FlowerErrorCode.NODE_UNAVAILABLE, reply.reason)
        if isinstance(reply, wire.Error):
            reason = f"{reply.code}: {reply.message}"[:MAX_REASON]
            return self._failed(task, FlowerErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason)
        report.bytes_in += len(reply.delta)
        if self.quorum is not None and report.ok >= self.quorum:
            raise _Surplus()
        started = time.perf_counter()
        if self.fold is not None:
            update = check_update(reply, self.shapes, self.limits, uniform_weights=self.uniform_weights)
            self.fold.add(update.delta, update.weight, update.scale)
            record, clipped = None, update.clipped
        else:
            accepted = check_reply(
                self.kind, reply, self.global_weights, self.shapes, self.limits, uniform_weights=self.uniform_weights
            )
            record, clipped = accepted.record, accepted.clipped
        report.aggregate_seconds += time.perf_counter() - started
        report.ok += 1
        report.clipped += clipped
        report.client_metrics.append({"num_examples": reply.num_examples, **reply.metrics})
        return None if record is None else Message(record, reply_to=task.message)

    def _refused(self, task: _Task, exc: ProtocolError) -> Message | None:
        """Count and log a refused reply, tell its client why, and fail its task (a surplus reply is no failure)."""
        if isinstance(exc, _Surplus):
            self.report.dropped += 1
            self._tell(task, wire.Error(ErrorCode.TASK_CANCELLED.value, exc.message, self.task_id))
            return None
        log.warning("rejected reply from node %d: %s", task.node_id, exc)
        self.report.rejected += 1
        self._tell(task, wire.Error(exc.code.value, exc.message[:MAX_REASON], self.task_id))
        return self._failed(task, FlowerErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(exc)[:MAX_REASON])

    def _failed(self, task: _Task, code: int, reason: str) -> Message:
        self.report.failures.append(f"node {task.node_id}: {reason}")
        return Message(Error(code, reason), reply_to=task.message)

    def _tell(self, task: _Task, error: wire.Error) -> None:
        try:
            self._refuse(task.node_id, error)
        except Exception:  # telling the client is a courtesy; the refusal stands regardless
            log.warning("could not tell node %d about its task", task.node_id, exc_info=True)

    # The end ---------------------------------------------------------------------
    def end_now(self) -> None:
        """Be complete now, as at a quorum: a shard told that the replies across shards make the quorum.

        The tasks still outstanding are then surplus, dropped when the phase closes.
        """
        self.quorum = self.report.ok if self.quorum is None else min(self.quorum, self.report.ok)

    def close(self, *, timeout: float | None, stopping: bool = False) -> None:
        """End the phase: outstanding tasks are cancelled (dropped past the quorum, late otherwise)."""
        if self.closed:
            return
        self.closed = True
        self._away.clear()  # a task held for its node is as late as any other
        if stopping:
            return
        quorum_met = self.quorum is not None and self.report.ok >= self.quorum
        for task in self._tasks.values():
            if task.done:
                continue
            task.done = True
            if quorum_met:
                self.report.dropped += 1
                self._tell(task, wire.Error(ErrorCode.TASK_CANCELLED.value, SURPLUS, self.task_id))
            else:
                self.report.late += 1
                self.report.failures.append(f"node {task.node_id}: no reply within {timeout} s")
                self._tell(task, wire.Error(ErrorCode.TASK_CANCELLED.value, LATE, self.task_id))
        self._open = 0

    def replies(self) -> list[Message]:
        """What the strategy receives: the shard record (streaming) or the clients' records, then the failures."""
        out: list[Message] = []
        if self.fold is not None:
            if self.fold.count:
                first = next(iter(self._tasks.values()))
                out.append(Message(self.fold.record(), reply_to=first.message))
            self.fold.release()
        # A cancelled task has no reply: it was the coordinator's choice, not the client's failure.
        out.extend(t.reply for t in self._tasks.values() if t.reply is not None)
        return out

    # Shards ------------------------------------------------------------------------
    @classmethod
    def for_shard(cls, task: ShardTask, weights: Tensors, refuse: Refuse) -> Phase:
        """A shard's own phase for `task`, with a task for each of its nodes, to send with `frame`."""
        phase = cls(
            task.task_id,
            task.kind,
            weights,
            PhaseReport(task.kind, task.round),
            frame=Broadcast(task.head, EncodedWeights(weights), task.weights_encoding),  # type: ignore[arg-type]
            shapes=task.shapes,
            limits=task.limits,
            uniform_weights=task.uniform_weights,
            streaming=task.streaming,
            refuse=refuse,
            resume_grace=task.resume_grace,
        )
        phase.quorum = task.quorum
        message_type = "train" if task.kind == "train" else "evaluate"
        for node_id in task.nodes:
            phase.add_task(node_id, Message(RecordDict(), node_id, message_type))
        return phase

    def partial(self) -> Partial:
        """This phase, run by a shard for its own clients, as the partial the coordinator merges (ends the fold)."""
        out = Partial(self.task_id, tuple(self._tasks), report=self.report)
        if self.fold is not None:
            out.sums, out.weight, out.count = self.fold.take()
        for node_id, task in self._tasks.items():
            if task.reply is None:
                continue
            if task.reply.has_error():
                out.outcomes[node_id] = (task.reply.error.code, task.reply.error.reason or "")
            else:
                out.outcomes[node_id] = task.reply.content
        return out

    def take_partial(self, partial: Partial) -> None:
        """Take in a shard's answer for its nodes: fold its sums, keep its other outcomes, add up its report."""
        if self.closed:
            return
        for node_id in partial.nodes:
            task = self._tasks.get(node_id)
            if task is None or task.done:
                continue
            task.done = True
            self._open -= 1
            outcome = partial.outcomes.get(node_id)
            if isinstance(outcome, tuple):
                task.reply = Message(Error(*outcome), reply_to=task.message)
            elif outcome is not None:
                task.reply = Message(outcome, reply_to=task.message)
        if partial.sums is not None and self.fold is not None and partial.count:
            self.fold.merge(partial.sums, partial.weight, partial.count)
        if partial.report is not None:
            self.report.add(partial.report)

    def reply_of(self, node_id: int) -> Message | None:
        """One task's per-client outcome, once it has one (push/pull callers; not for folded updates)."""
        task = self._tasks.get(node_id)
        return task.reply if task is not None else None


SURPLUS = "the round has the updates it needs; this task is cancelled"
LATE = "the round's deadline passed; this task is cancelled"


class _Surplus(ProtocolError):
    def __init__(self) -> None:
        super().__init__(ErrorCode.TASK_CANCELLED, SURPLUS)


def _unexpected(exc: Exception) -> str:
    return f"the reply could not be checked ({type(exc).__name__})"
