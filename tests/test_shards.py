"""Shards (gateways) at the grid level: the same replies give the same model through shards as through one grid.

`FakeShards` runs each phase the way a gateway does (`Phase.for_shard`, `Phase.partial`), with
no Ray and no sockets, so every strategy can be checked in milliseconds; tests/test_gateways.py
runs the real thing.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode as FlowerErrorCode
from flwr.supercore.task_identity import TaskIdentity

from coordinator.federation.aggregation import RunningMean
from coordinator.federation.broadcast import Broadcast
from coordinator.federation.grid import NodeGrid
from coordinator.federation.phase import Phase
from coordinator.federation.phases import PhaseReport
from coordinator.federation.replies import ReplyLimits
from coordinator.federation.shards import Partial, Shards, ShardTask
from coordinator.federation.strategies import build_strategy
from coordinator.protocol import Task, decode
from coordinator.protocol.tensors import Tensors
from coordinator.settings import STREAMING_STRATEGIES, Settings
from tests.fake_nodes import Answer, FakeNodes
from tests.test_streaming import NODES, SPEC, distance, federate, start, varied


@pytest.fixture(autouse=True)
def task_identity() -> Iterator[None]:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield


class FakeShards(FakeNodes):
    """`count` shards; node n sits in shard n mod count. A shard in `dead` answers with every task failed."""

    def __init__(
        self,
        ids: list[int],
        answer: Answer,
        count: int = 3,
        dead: frozenset[int] = frozenset(),
        slow: frozenset[int] = frozenset(),
    ) -> None:
        """A shard in `slow` takes its clients' replies only when told to end the phase (or at its deadline)."""
        super().__init__(ids, answer)
        self.shards, self.dead, self.slow = count, dead, slow
        self.tasks: list[ShardTask] = []
        self.leave: list[int] = []
        self.ended: dict[str, threading.Event] = {}

    def send_task(self, node_id: int, task_id: str, task: Broadcast) -> bool:
        raise AssertionError("a grid over shards sends whole phases")

    def send_phase(
        self,
        task: ShardTask,
        weights: Tensors,
        on_partial: Callable[[Partial], None],
        on_progress: Callable[[int, int], None],
    ) -> None:
        for node_id in self.leave:  # they leave their gateway after answering, before its partial is in
            for listener in self.listeners:
                listener(node_id)
        self.ended[task.task_id] = threading.Event()
        for shard in range(self.shards):
            nodes = tuple(n for n in task.nodes if n % self.shards == shard)
            if not nodes:
                continue
            part = ShardTask(**{**task.__dict__, "nodes": nodes})
            self.tasks.append(part)
            # On threads of their own, as Ray's waiter threads answer.
            threading.Thread(target=self._answer, args=(shard, part, weights, on_partial, on_progress)).start()

    def end_phase(self, task_id: str) -> None:
        self.ended[task_id].set()

    def _answer(
        self,
        shard: int,
        task: ShardTask,
        weights: Tensors,
        on_partial: Callable[[Partial], None],
        on_progress: Callable[[int, int], None],
    ) -> None:
        if shard in self.dead:
            partial = Partial.failed(task, f"gateway {shard} failed", FlowerErrorCode.NODE_UNAVAILABLE)
        else:
            partial = self._run(shard, task, weights, on_progress)
        partial.shard = shard
        on_partial(partial)

    def _run(self, shard: int, task: ShardTask, weights: Tensors, on_progress: Callable[[int, int], None]) -> Partial:
        phase = Phase.for_shard(task, weights, lambda node_id, error: None)
        if shard in self.slow:
            self.ended[task.task_id].wait(task.timeout)
            phase.end_now()  # told to end before any of its clients answered
        frame = phase.frame.frame("fp32").join()
        for node_id in task.nodes:
            sent = decode(frame)
            assert isinstance(sent, Task)
            reply = self.answer(node_id, sent) if not phase.complete else None
            if reply is not None:
                phase.take(node_id, reply)
                on_progress(shard, phase.report.ok)
        phase.close(timeout=task.timeout)
        return phase.partial()


def federate_sharded(
    strategy: str, *, dp: bool = False, rounds: int = 3, dead: frozenset[int] = frozenset()
) -> tuple[dict[str, np.ndarray], FakeShards]:
    privacy = {"dp_clip": 1.0, "dp_noise": 0.3, "clients_per_round": len(NODES)} if dp else {}
    settings = Settings(strategy=strategy, min_clients=len(NODES), **privacy)  # type: ignore[arg-type]
    shards = FakeShards(NODES, varied, dead=dead)
    assert isinstance(shards, Shards)
    limits = ReplyLimits(clip_norm=settings.update_norm_bound)
    streaming = strategy in STREAMING_STRATEGIES
    grid = NodeGrid(shards, SPEC, "run", uniform_weights=dp, limits=limits, streaming=streaming, overselect=1.0)
    random.seed(0)
    np.random.seed(1)
    result = build_strategy(settings).start(
        grid, start(), num_rounds=rounds, timeout=30, train_config=ConfigRecord({"lr": 0.1})
    )
    return {k: v.numpy() for k, v in result.arrays.items()}, shards


@pytest.mark.parametrize("strategy", [s for s in STREAMING_STRATEGIES if s != "fedadagrad"])
def test_shards_give_the_same_model_as_one_grid(strategy: str) -> None:
    sharded, shards = federate_sharded(strategy)
    assert distance(sharded, federate(strategy, streaming=True)) < 1e-6
    assert len(shards.tasks) == 3 * 3  # three rounds, three shards each: the task once per shard


def test_shards_with_dp_give_the_same_model_and_noise() -> None:
    sharded, _ = federate_sharded("fedavg", dp=True)
    assert distance(sharded, federate("fedavg", streaming=True, dp=True)) < 1e-6


def test_a_robust_strategy_gets_every_update_through_the_shards() -> None:
    sharded, _ = federate_sharded("fedmedian")
    assert distance(sharded, federate("fedmedian", streaming=False)) < 1e-6


def test_a_dead_shard_fails_its_clients_and_the_round_goes_on_with_the_rest() -> None:
    """Shard 0 holds nodes 3 and 6: the model is FedAvg over the other six."""
    sharded, _ = federate_sharded("fedavg", rounds=1, dead=frozenset({0}))
    alive = [n for n in NODES if n % 3]
    settings = Settings(strategy="fedavg", min_clients=1)
    nodes = FakeNodes(alive, varied)
    grid = NodeGrid(nodes, SPEC, "run", streaming=True, overselect=1.0)
    nodes.grid = grid
    random.seed(0)
    expected = build_strategy(settings).start(
        grid, start(), num_rounds=1, timeout=30, train_config=ConfigRecord({"lr": 0.1})
    )
    assert distance(sharded, {k: v.numpy() for k, v in expected.arrays.items()}) < 1e-6


def test_a_client_leaving_its_gateway_is_the_gateway_s_to_count() -> None:
    """The shard folded its update: the coordinator must not also fail its task as lost."""
    settings = Settings(strategy="fedavg", min_clients=len(NODES))
    shards = FakeShards(NODES, varied)
    shards.leave = [2, 5]
    reports: list[PhaseReport] = []
    grid = NodeGrid(shards, SPEC, "run", streaming=True, overselect=1.0, on_phase=reports.append)
    random.seed(0)
    result = build_strategy(settings).start(
        grid, start(), num_rounds=1, timeout=30, train_config=ConfigRecord({"lr": 0.1})
    )
    assert reports[0].ok == len(NODES) and not reports[0].failures
    expected = federate("fedavg", streaming=True, rounds=1)
    assert distance({k: v.numpy() for k, v in result.arrays.items()}, expected) < 1e-6


def test_a_shard_with_slow_clients_is_ended_once_the_others_make_the_quorum() -> None:
    # Nodes 1-9 over 3 shards; shard 0 (3, 6, 9) hears nothing from its clients until told to end. The
    # cohort is 6 of 9 (over-selection 1.5): the other shards' 6 updates are the quorum. (Each shard used
    # to end at its own share of it, 2: the fast ones dropped a reply each and the round waited for the slow.)
    reports: list[PhaseReport] = []
    shards = FakeShards(list(range(1, 10)), varied, slow=frozenset({0}))
    grid = NodeGrid(shards, SPEC, "run", streaming=True, overselect=1.5, on_phase=reports.append)
    shards.grid = grid
    content = RecordDict({"arrays": start(), "config": ConfigRecord({"server-round": 1})})
    started = time.monotonic()
    replies = list(grid.send_and_receive([Message(content, n, "train") for n in range(1, 7)], timeout=30))
    assert time.monotonic() - started < 10  # not the 30 s deadline the slow shard would have waited for
    (report,) = reports
    assert (report.sent, report.ok, report.dropped, report.late, report.failures) == (9, 6, 3, 0, [])
    assert replies[0].content.metric_records["metrics"]["num-clients"] == 6
    (ended,) = shards.ended.values()
    assert ended.is_set()  # the slow shard was told to let its clients go, not left to its deadline


def test_the_coordinator_makes_no_task_frame_its_shards_would_not_send(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    payload = Broadcast._payload

    def counted(self: Broadcast, encoding: str) -> list[bytes | memoryview]:
        made.append(encoding)
        return payload(self, encoding)

    monkeypatch.setattr(Broadcast, "_payload", counted)
    shards = FakeShards(NODES, varied)
    grid = NodeGrid(shards, SPEC, "run", streaming=True)
    shards.grid = grid
    content = RecordDict({"arrays": start(), "config": ConfigRecord({"server-round": 1})})
    grid.send_and_receive([Message(content, n, "train") for n in NODES], timeout=5)
    assert len(made) == len({n % shards.shards for n in NODES})  # one per shard, made there; none here


def test_merged_sums_are_the_sum_over_all_clients() -> None:
    rng = np.random.default_rng(3)
    base = {"w": rng.standard_normal((4, 5)).astype(np.float32)}
    deltas = [({"w": rng.standard_normal((4, 5)).astype(np.float32)}, float(w)) for w in (1, 3, 5, 7)]
    whole, left, right = RunningMean(base), RunningMean(base), RunningMean(base)
    for i, (delta, weight) in enumerate(deltas):
        whole.add(delta, weight)
        (left if i % 2 else right).add(delta, weight)
    merged = RunningMean(base)
    for part in (left, right):
        merged.merge(*part.take())
    assert merged.count == 4 and merged.weight == 16.0
    np.testing.assert_allclose(merged.mean()["w"], whole.mean()["w"], atol=1e-6)
