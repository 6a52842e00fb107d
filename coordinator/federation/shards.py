"""Shards: nodes that run a phase for their own clients and answer with one partial.

A gateway (see `coordinator.cluster`) holds its own clients. For each phase the grid sends it
the task once (`ShardTask`, with the weights beside it) and the list of its nodes in the
cohort; the gateway checks its clients' replies and folds them as the grid would, and returns
a `Partial`: the raw example-weighted sums of what it folded, their total weight and count,
the outcome of each task it did not fold (evaluate results, updates kept for robust
strategies, failures), and its phase report. `Phase.take_partial` merges partials: the sum of
the shards' sums is the sum over all their clients, so FedAvg over gateways is FedAvg over
clients. The coordinator's memory for a phase is then one accumulator plus the partials in
flight, whatever the number of clients behind the gateways.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from flwr.app import RecordDict

from coordinator.federation.phases import PhaseReport
from coordinator.federation.replies import Kind, ReplyLimits
from coordinator.protocol.tensors import Tensors


@dataclass(frozen=True)
class ShardTask:
    """One phase's task for a shard: everything but the weights, which travel beside it once."""

    task_id: str
    kind: Kind
    round: int
    head: bytes  # the task frame up to its payload: every client of every shard gets the same header
    nodes: tuple[int, ...]  # this shard's nodes in the phase (cohort and over-selected)
    quorum: int | None  # the phase's quorum, across shards: a shard that has it alone ends; see `Shards`
    timeout: float | None
    streaming: bool  # fold train updates (FedAvg family) or keep each one (robust strategies)
    shapes: dict[str, tuple[int, ...]]
    limits: ReplyLimits
    uniform_weights: bool
    weights_encoding: str
    resume_grace: float = 0.0  # how long a task is held for a node whose client keeps its jobs (SPEC §4.2)


# A task's outcome that was not folded: the client's record, or (Flower error code, reason).
Outcome = RecordDict | tuple[int, str]


@dataclass
class Partial:
    """What a shard answers for one phase."""

    task_id: str
    nodes: tuple[int, ...]  # every node it was sent the task for
    sums: Tensors | None = None  # Σ w·scale·delta over its folded updates, flat float32 (`RunningMean.take`)
    weight: float = 0.0
    count: int = 0
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    report: PhaseReport | None = None
    shard: int = 0  # which shard answered: the key of its progress reports

    @classmethod
    def failed(cls, task: ShardTask, reason: str, code: int) -> Partial:
        """Every task of a shard that could not answer (a gateway that died) as that node's failure."""
        report = PhaseReport(task.kind, task.round, sent=len(task.nodes))
        report.failures = [f"node {n}: {reason}" for n in task.nodes]
        return cls(task.task_id, task.nodes, outcomes={n: (code, reason) for n in task.nodes}, report=report)


@runtime_checkable
class Shards(Protocol):
    """Nodes grouped behind shards. A `Nodes` implementation that is also `Shards` gets whole phases."""

    def send_phase(
        self,
        task: ShardTask,
        weights: Tensors,
        on_partial: Callable[[Partial], None],
        on_progress: Callable[[int, int], None],
    ) -> None:
        """Start `task` on the shards that hold its nodes; each answers once through `on_partial`.

        Returns at once. `on_partial` is called from another thread, exactly once per shard that
        had nodes in the task, with `Partial.failed` for a shard that could not answer. While a
        task with a quorum runs, `on_progress(shard, accepted)` says now and then how many updates
        a shard has accepted so far; the caller judges the quorum across shards (`end_phase`).
        """
        ...

    def end_phase(self, task_id: str) -> None:
        """Tell every shard still running `task_id` to end it now and answer with what it has."""
        ...
