"""A Flower `Grid` whose nodes are whatever implements `Nodes`.

Stock `flwr.serverapp` strategies run on it unchanged. The grid

* serialises each phase's broadcast once (and each round's global weights once,
  through `WeightsEncoder`) and sends the same bytes to every node;
* over-selects a train cohort by `overselect` when there are idle nodes to spare, and
  ends the phase once the cohort's worth of updates is in (a `Phase`'s quorum);
* checks every reply the moment it arrives (`Phase.take`), so a bad client becomes an
  error reply instead of aborting the run (strategies raise on inconsistent replies),
  and the client is told why. Whatever goes wrong while one reply is checked, even an
  exception nobody foresaw, stays that client's failure;
* with `streaming`, folds each accepted update into a running mean and hands the
  strategy one record for the whole shard: O(model) memory per round, whatever the
  cohort (see `aggregation`). Without it (robust strategies need every update) it keeps
  at most `max_updates` updates and drops the rest;
* answers a task with an error at once when its node is lost, unless its client keeps its
  jobs across reconnects: then the task is held for the node's return for `resume_grace`
  seconds (SPEC §4.2; see `OpenPhases`);
* hands each phase's `PhaseReport` to `on_phase` when the phase ends.

Strategies call it from their own thread; `deliver`, `node_away`, `node_lost` and `resume`
come from whichever thread the nodes live on (the event loop for WebSockets). All shared
state sits behind one condition variable.
"""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from coordinator.federation.broadcast import Broadcast
from coordinator.federation.control import RunControl
from coordinator.federation.nodes import AwayNodes, Nodes
from coordinator.federation.open_phases import OpenPhases
from coordinator.federation.phase import Phase
from coordinator.federation.phases import PhaseReport
from coordinator.federation.replies import DEFAULT_LIMITS, Kind, Lost, ReplyLimits
from coordinator.federation.round_lr import RoundLr
from coordinator.federation.shards import Partial, Shards, ShardTask
from coordinator.federation.weights import WeightsEncoder
from coordinator.models.spec import ModelSpec
from coordinator.protocol import messages as wire
from coordinator.protocol.encodings import Encoding
from coordinator.protocol.frame import encode_frame

log = logging.getLogger(__name__)

SHARD_GRACE_SECONDS = 30.0  # a gateway answers at its phase's deadline; this covers getting the partial here


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
        streaming: bool = False,
        overselect: float = 1.0,
        max_updates: int | None = None,
        weights_encoding: Encoding = "fp32",
        control: RunControl | None = None,
        encoder: WeightsEncoder | None = None,
        round_lr: RoundLr | None = None,
        data_schema: dict[str, Any] | None = None,
        on_phase: Callable[[PhaseReport], None] = lambda report: None,
        resume_grace: float = 0.0,
    ) -> None:
        """`streaming`: fold train updates as they arrive (FedAvg-family strategies only). `overselect`: send
        each train task to up to this many times the cohort. `max_updates`: keep at most this many updates
        per phase when not streaming (what fits in memory). `round_lr`: the `lr` each round's train tasks carry.
        `data_schema`: how clients prepare their data (SPEC §2.3), carried by every task. `resume_grace`: how
        long a task is held for a node whose client keeps its jobs across reconnects (SPEC §4.2; 0: not at all)."""
        self.control = control or RunControl()
        self.encoder = encoder or WeightsEncoder()
        self.nodes = nodes
        self.spec = spec
        self.run_id = run_id
        self.round_offset = round_offset
        self.uniform_weights = uniform_weights
        self.limits = limits
        self.min_clients = min_clients
        self.streaming = streaming
        self.overselect = overselect
        self.max_updates = max_updates
        self.weights_encoding = weights_encoding
        self.round_lr = round_lr
        self.data_schema = data_schema
        self.resume_grace = resume_grace
        self._on_phase = on_phase
        self._shapes = spec.wire_shapes()
        self._run = Run.create_empty(1)
        self._under_way = OpenPhases()
        self._cond = self._under_way.cond
        self._phases = self._under_way.phases  # open phases by task id
        self._pushed: dict[str, tuple[Phase, int]] = {}  # Flower message id → its phase and node (push/pull)
        self._handed_out: list[RecordDict] = []  # records of the replies the strategy got from the last exchange
        self._last_wait_log = 0.0
        self._phase_timeout: float | None = None  # the current exchange's, for shards
        nodes.on_lost(self.node_lost)
        if isinstance(nodes, AwayNodes):
            nodes.on_away(self.node_away)

    def detach(self) -> None:
        """Stop listening for lost nodes (the run is over)."""
        self.nodes.off_lost(self.node_lost)
        if isinstance(self.nodes, AwayNodes):
            self.nodes.off_away(self.node_away)

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
        """Send without folding or quorum: each message gets its own reply through `pull_messages`."""
        self._phase_timeout = None  # pushed tasks have no deadline of their own
        ids: list[str] = []
        for phase, cohort in self._open_phases(list(messages), streaming=False):
            for msg in cohort:
                with self._cond:
                    self._pushed[msg.metadata.message_id] = (phase, msg.metadata.dst_node_id)
                ids.append(msg.metadata.message_id)
            self._send(phase, cohort)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        out: list[Message] = []
        self._under_way.expire()  # nobody waits on pushed tasks: those held for absent nodes expire here
        with self._cond:
            for message_id in message_ids:
                phase, node_id = self._pushed.get(message_id, (None, 0))
                reply = phase.reply_of(node_id) if phase is not None else None
                if reply is not None:
                    out.append(reply)
                    del self._pushed[message_id]
        return out

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        self.control.checkpoint()  # a paused run waits here, between phases
        _let_go_of_arrays(self._handed_out, ours=True)
        self._phase_timeout = timeout
        messages = list(messages)
        phases = self._open_phases(messages, streaming=self.streaming)
        for phase, cohort in phases:
            self._send(phase, cohort + self._extras(phase, cohort))
        self._wait([p for p, _ in phases], None if timeout is None else timeout + self._grace())
        if isinstance(self.nodes, Shards):
            for phase, _ in phases:
                if not phase.complete:  # stopping, or past the deadline: shards still at it let go now
                    self.nodes.end_phase(phase.task_id)
        replies: list[Message] = []
        with self._cond:
            for phase, _ in phases:
                phase.close(timeout=timeout, stopping=self.control.stopping)
                self._phases.pop(phase.task_id, None)
                if not self.control.stopping:
                    replies.extend(phase.replies())
        _let_go_of_arrays(list({id(m.content): m.content for m in messages}.values()))
        self._handed_out = [m.content for m in replies if not m.has_error()]
        if self.control.stopping:
            self.control.checkpoint()  # raises RunStopped
        for phase, _ in phases:
            phase.report.seconds = time.time() - phase.report.started
            phase.report.bytes_out += phase.frame.bytes_out  # shards count their own
            self._on_phase(phase.report)
        return replies

    # Called from the nodes' thread ---------------------------------------------
    def deliver(self, node_id: int, reply: wire.Result | wire.Error) -> bool:
        """A node answered; False if no such task is waiting for it (late, cancelled, or never sent)."""
        return self._under_way.deliver(node_id, reply)

    def node_away(self, node_id: int) -> None:
        """A node's connection ended but its client keeps its jobs: its tasks are held for it (before `node_lost`)."""
        if not isinstance(self.nodes, Shards):  # a shard holds its own nodes' tasks
            self._under_way.away(node_id)

    def node_lost(self, node_id: int) -> None:
        """A node's connection ended: its tasks fail, but those `node_away` held for it."""
        if isinstance(self.nodes, Shards):
            return  # its shard owns its task: the partial says how it ended (folded, kept or failed)
        self._under_way.lost(node_id)

    def resume(self, node_id: int, task_ids: list[str]) -> list[str]:
        """The node is back on a new connection that claims `task_ids`: those it may still answer (`OpenPhases.resume`).

        Nothing under shards: a node's tasks are its gateway's, resumed there.
        """
        if isinstance(self.nodes, Shards):
            return []
        return self._under_way.resume(node_id, task_ids)

    # Internals ---------------------------------------------------------------
    def _open_phases(self, messages: list[Message], *, streaming: bool) -> list[tuple[Phase, list[Message]]]:
        """One phase per distinct content (a strategy broadcasts one record to its whole cohort)."""
        groups: dict[int, list[Message]] = {}
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            groups.setdefault(id(msg.content), []).append(msg)
        return [(self._open(cohort[0], streaming), cohort) for cohort in groups.values()]

    def _open(self, msg: Message, streaming: bool) -> Phase:
        kind: Kind = "train" if msg.metadata.message_type.startswith("train") else "evaluate"
        weights = self.encoder.encode(next(r for r in msg.content.values() if isinstance(r, ArrayRecord)))
        config = next((r for r in msg.content.values() if isinstance(r, ConfigRecord)), ConfigRecord())
        round_number = self.round_offset + int(config.get("server-round", 0))  # type: ignore[arg-type]
        wire_config = {k: v for k, v in config.items() if isinstance(v, bool | int | float | str)}
        if kind == "train" and self.round_lr is not None:
            wire_config["lr"] = self.round_lr.at(round_number)
        # The frame's payload comes from `weights` as the broadcast is made: the task here is its header.
        task = wire.Task(
            kind, uuid.uuid4().hex, self.run_id, round_number, self.spec.raw, wire_config, data=self.data_schema
        )
        phase = Phase(
            task.task_id,
            kind,
            weights.tensors,
            PhaseReport(kind, round_number),
            frame=Broadcast(
                encode_frame(task.header()), weights, None if isinstance(self.nodes, Shards) else self.weights_encoding
            ),
            shapes=self._shapes,
            limits=self.limits,
            uniform_weights=self.uniform_weights,
            streaming=streaming,
            refuse=self._refuse,
            resume_grace=self.resume_grace,
        )
        with self._cond:
            self._phases[phase.task_id] = phase
        return phase

    def _extras(self, phase: Phase, cohort: list[Message]) -> list[Message]:
        """Over-selection: idle nodes that get the train task too; the phase ends at the cohort's worth."""
        if phase.kind != "train":
            return []
        phase.quorum = len(cohort) if self.max_updates is None else min(len(cohort), self.max_updates)
        wanted = math.ceil(len(cohort) * self.overselect) - len(cohort)
        if wanted <= 0:
            return []
        taken = {m.metadata.dst_node_id for m in cohort}
        idle = [n for n in self.nodes.node_ids() if n not in taken]
        first = cohort[0]
        extras = []
        for node_id in random.sample(idle, min(wanted, len(idle))):
            msg = self.create_message(first.content, first.metadata.message_type, node_id, first.metadata.group_id)
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            extras.append(msg)
        return extras

    def _send(self, phase: Phase, messages: list[Message]) -> None:
        with self._cond:
            for msg in messages:
                phase.add_task(msg.metadata.dst_node_id, msg)
        if isinstance(self.nodes, Shards):
            self._send_to_shards(self.nodes, phase, messages)
            return
        for msg in messages:
            node_id = msg.metadata.dst_node_id
            if not self.nodes.send_task(node_id, phase.task_id, phase.frame):
                self._lost(phase, node_id)

    def _send_to_shards(self, shards: Shards, phase: Phase, messages: list[Message]) -> None:
        """The whole phase to the shards that hold its nodes, the task once each; partials come back whole."""
        task = ShardTask(
            phase.task_id,
            phase.kind,
            phase.report.round,
            phase.frame.head,
            tuple(m.metadata.dst_node_id for m in messages),
            phase.quorum,
            self._phase_timeout,
            phase.fold is not None,
            self._shapes,
            self.limits,
            self.uniform_weights,
            self.weights_encoding,
            self.resume_grace,
        )

        answered: set[int] = set()
        progress: dict[int, int] = {}  # accepted so far, by shard still running the phase
        ended = False

        def quorum_met() -> bool:
            # Across shards: a gateway whose clients are slow is told to end with what it has, rather
            # than keep the round waiting for its own share of the quorum. Caller holds `_cond`.
            nonlocal ended
            if ended or phase.closed or phase.quorum is None:
                return False
            ended = phase.report.ok + sum(progress.values()) >= phase.quorum
            return ended

        def take(partial: Partial) -> None:
            with self._cond:
                answered.add(partial.shard)
                progress.pop(partial.shard, None)
                phase.take_partial(partial)
                self._cond.notify_all()
                end = quorum_met() and not phase.complete
            if end:
                shards.end_phase(phase.task_id)

        def advance(shard: int, accepted: int) -> None:
            with self._cond:
                if shard in answered:
                    return
                progress[shard] = accepted
                end = quorum_met()
            if end:
                shards.end_phase(phase.task_id)

        shards.send_phase(task, phase.global_weights, take, advance)

    def _grace(self) -> float:
        """How long past a phase's deadline to wait for shards' partials (they close their phases at it)."""
        return SHARD_GRACE_SECONDS if isinstance(self.nodes, Shards) else 0.0

    def _lost(self, phase: Phase, node_id: int) -> None:
        self._under_way.take(phase, node_id, Lost())

    def _wait(self, phases: list[Phase], timeout: float | None) -> None:
        self._under_way.wait(phases, timeout, stop=lambda: self.control.stopping)

    def _refuse(self, node_id: int, error: wire.Error) -> None:
        self.nodes.reject(node_id, error)


def _let_go_of_arrays(records: list[RecordDict], *, ours: bool = False) -> None:
    """Drop the model-sized arrays of records that have served their exchange.

    Flower's records wait for the cyclic garbage collector more often than not: each view such as
    `RecordDict.array_records` is a new dict that refers to itself (a bound method in it) and to
    the record's `ArrayRecord`s. So the weights of every task's content (the global model) and of
    every reply handed to the strategy (a shard's mean, or a client's update) would outlive their
    exchange, into the next round's peak, or for good once `GcKeeper` has frozen them. A task's
    content is done when its exchange returns: its records lose their arrays (an `ArrayRecord`
    the strategy kept stays whole). Replies are done once the strategy asks for the next
    exchange (Flower's `start` keeps its `train_replies` until then, long after `aggregate_train`
    read them); their `ArrayRecord`s are the grid's own (`ours`), and are emptied.
    """
    for record in records:
        for name, item in list(record.items()):
            if isinstance(item, ArrayRecord):
                del record[name]
                if ours:
                    item.clear()
