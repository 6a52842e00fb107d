"""The grid against a fake `Nodes`, with no sockets: replies, lost nodes, late replies, timeouts, pause and stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode as FlowerErrorCode
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from coordinator.federation.control import RunStopped
from coordinator.federation.grid import NodeGrid
from coordinator.federation.phases import PhaseReport
from coordinator.models.spec import load_spec
from coordinator.protocol import Error, Result, Task, decode, decode_tensors, encode_tensors

SPEC = load_spec("mnist-mlp")
SHAPES = SPEC.wire_shapes()
Answer = Callable[[int, Task], Result | Error | None]


class FakeNodes:
    """Nodes that answer each task synchronously with `answer(node_id, task)`; None means never."""

    def __init__(self, ids: list[int], answer: Answer) -> None:
        self.ids = list(ids)
        self.answer = answer
        self.grid: NodeGrid | None = None
        self.sent: list[tuple[int, Task, bytes]] = []
        self.rejected: list[tuple[int, Error]] = []
        self.listeners: list[Callable[[int], None]] = []

    def node_ids(self) -> list[int]:
        return sorted(self.ids)

    def count(self) -> int:
        return len(self.ids)

    def send_task(self, node_id: int, task_id: str, frame: bytes) -> bool:
        if node_id not in self.ids:
            return False
        task = decode(frame)
        assert isinstance(task, Task) and task.task_id == task_id
        self.sent.append((node_id, task, frame))
        reply = self.answer(node_id, task)
        if reply is not None:
            assert self.grid is not None
            self.grid.deliver(node_id, reply)
        return True

    def reject(self, node_id: int, error: Error) -> bool:
        self.rejected.append((node_id, error))
        return True

    def on_lost(self, listener: Callable[[int], None]) -> None:
        self.listeners.append(listener)

    def off_lost(self, listener: Callable[[int], None]) -> None:
        self.listeners.remove(listener)

    def close_all(self, *, going_away: bool = False) -> None:
        self.ids.clear()

    def lose(self, node_id: int) -> None:
        self.ids.remove(node_id)
        for listener in list(self.listeners):
            listener(node_id)


def delta_of(value: float) -> bytes:
    return encode_tensors({name: np.full(shape, value, np.float32) for name, shape in SHAPES.items()})


def good(node_id: int, task: Task) -> Result:
    """Node n trains on 10·n examples and moves every weight by n/10."""
    if task.kind == "evaluate":
        return Result(task.task_id, 5, {"loss": 0.5, "accuracy": 0.8})
    return Result(task.task_id, 10 * node_id, {"train_loss": float(node_id)}, delta_of(node_id / 10))


def weights() -> ArrayRecord:
    rng = np.random.default_rng(0)
    return ArrayRecord({n: Array(rng.standard_normal(s).astype(np.float32)) for n, s in SHAPES.items()})


@pytest.fixture(autouse=True)
def task_identity() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1


def make(ids: list[int], answer: Answer = good, **kwargs: object) -> tuple[NodeGrid, FakeNodes, list[PhaseReport]]:
    reports: list[PhaseReport] = []
    nodes = FakeNodes(ids, answer)
    grid = NodeGrid(nodes, SPEC, "run-1", on_phase=reports.append, **kwargs)  # type: ignore[arg-type]
    nodes.grid = grid
    return grid, nodes, reports


def train_messages(grid: NodeGrid, arrays: ArrayRecord, node_ids: list[int], server_round: int = 1) -> list[Message]:
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round, "lr": 0.1})})
    return [Message(content, n, "train") for n in node_ids]


def test_fedavg_over_the_grid_averages_global_plus_deltas_by_examples() -> None:
    grid, nodes, reports = make([1, 2, 3])
    start = weights()
    seen: list[ArrayRecord] = []

    def after_round(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        grid.encoder.encode(arrays)  # what the run loop does for the checkpoint
        seen.append(arrays)
        return MetricRecord({})

    strategy = FedAvg(fraction_train=1.0, min_train_nodes=3, min_available_nodes=3, min_evaluate_nodes=3)
    strategy.start(
        grid, start, num_rounds=2, timeout=10, train_config=ConfigRecord({"lr": 0.1}), evaluate_fn=after_round
    )

    shift = (10 * 0.1 + 20 * 0.2 + 30 * 0.3) / 60  # examples-weighted mean delta per round
    for name, array in seen[-1].items():
        np.testing.assert_allclose(array.numpy(), start[name].numpy() + 2 * shift, rtol=1e-6, atol=1e-6)
    assert [(r.kind, r.round, r.sent, r.ok, r.failures) for r in reports] == [
        ("train", 1, 3, 3, []),
        ("evaluate", 1, 3, 3, []),
        ("train", 2, 3, 3, []),
        ("evaluate", 2, 3, 3, []),
    ]
    train = reports[0]
    assert train.mean("train_loss") == pytest.approx(2.0) and train.max("num_examples") == 30
    frames = [frame for _, task, frame in nodes.sent if task.kind == "train" and task.round == 1]
    assert len({id(f) for f in frames}) == 1  # one encoded broadcast shared by every node
    assert train.bytes_out == 3 * len(frames[0]) and train.bytes_in == 3 * len(delta_of(0.1))
    # The round's global weights are serialised once: for the evaluate broadcast, the checkpoint and the next train.
    assert grid.encoder.encodings == 1 + 2
    assert nodes.sent[0][1].config == {"server-round": 1, "lr": 0.1}
    np.testing.assert_array_equal(
        decode_tensors(nodes.sent[0][1].weights)["layers.1.bias"], start["layers.1.bias"].numpy()
    )


def test_a_lost_node_is_answered_with_an_error_at_once() -> None:
    grid, nodes, reports = make([1, 2, 3], lambda n, t: None if n == 2 else good(n, t))
    threading.Timer(0.2, nodes.lose, [2]).start()
    began = time.monotonic()
    replies = list(grid.send_and_receive(train_messages(grid, weights(), [1, 2, 3]), timeout=30))
    assert time.monotonic() - began < 5
    errors = [(r.metadata.src_node_id, r.error) for r in replies if r.has_error()]
    assert len(replies) == 3 and len(errors) == 1
    ((node_id, error),) = errors
    assert node_id == 2 and error.code == FlowerErrorCode.NODE_UNAVAILABLE
    assert reports[0].failures == ["node 2: client disconnected"] and reports[0].ok == 2


def test_a_node_that_is_not_connected_is_lost_without_waiting() -> None:
    grid, _, reports = make([1])
    began = time.monotonic()
    replies = list(grid.send_and_receive(train_messages(grid, weights(), [1, 7]), timeout=30))
    assert time.monotonic() - began < 5
    assert sorted(r.has_error() for r in replies) == [False, True]
    assert reports[0].failures == ["node 7: client disconnected"]


def test_a_silent_node_times_out_and_its_late_reply_is_refused() -> None:
    grid, nodes, reports = make([1, 2], lambda n, t: None if n == 2 else good(n, t))
    replies = list(grid.send_and_receive(train_messages(grid, weights(), [1, 2]), timeout=0.3))
    assert len(replies) == 1 and not replies[0].has_error()
    assert reports[0].failures == ["node 2: no reply within 0.3 s"]
    late_task = next(task for n, task, _ in nodes.sent if n == 2)
    assert not grid.deliver(2, good(2, late_task))


def test_a_reply_from_another_node_is_not_accepted() -> None:
    grid, nodes, _ = make([1, 2], lambda n, t: None)
    thread = threading.Thread(
        target=grid.send_and_receive, args=(train_messages(grid, weights(), [1]),), kwargs={"timeout": 0.5}
    )
    thread.start()
    while not nodes.sent:
        time.sleep(0.01)
    assert not grid.deliver(2, good(2, nodes.sent[0][1]))
    assert grid.deliver(1, good(1, nodes.sent[0][1]))
    thread.join()


def test_a_client_error_becomes_a_failed_reply() -> None:
    grid, nodes, reports = make([1], lambda n, t: Error("training_failed", "loss is NaN", t.task_id))
    (reply,) = grid.send_and_receive(train_messages(grid, weights(), [1]), timeout=5)
    assert reply.has_error() and reply.error.code == FlowerErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert reports[0].failures == ["node 1: training_failed: loss is NaN"]
    assert nodes.rejected == []


def test_an_invalid_update_is_refused_and_the_client_told_why() -> None:
    def wrong_shape(n: int, t: Task) -> Result:
        return Result(t.task_id, 10, {}, encode_tensors({"layers.1.weight": np.zeros((1, 1), np.float32)}))

    grid, nodes, reports = make([1], wrong_shape)
    (reply,) = grid.send_and_receive(train_messages(grid, weights(), [1]), timeout=5)
    assert reply.has_error() and "tensor names differ" in str(reply.error.reason)
    ((node_id, error),) = nodes.rejected
    assert node_id == 1 and error.code == "invalid_update" and error.reply_to == nodes.sent[0][1].task_id
    assert reports[0].ok == 0 and len(reports[0].failures) == 1


def test_a_paused_run_waits_before_the_next_phase_until_resumed() -> None:
    grid, nodes, _ = make([1])
    grid.control.pause()
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.extend(grid.send_and_receive(train_messages(grid, weights(), [1]))))
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive() and nodes.sent == []
    grid.control.resume()
    thread.join(5)
    assert not thread.is_alive() and len(out) == 1


def test_stopping_ends_a_phase_that_is_waiting_and_forgets_its_tasks() -> None:
    grid, nodes, reports = make([1], lambda n, t: None)
    threading.Timer(0.2, grid.control.stop).start()
    with pytest.raises(RunStopped):
        grid.send_and_receive(train_messages(grid, weights(), [1]), timeout=30)
    assert not grid.deliver(1, good(1, nodes.sent[0][1]))
    assert reports == []


def test_detach_stops_listening_for_lost_nodes() -> None:
    grid, nodes, _ = make([1])
    assert nodes.listeners == [grid.node_lost]
    grid.detach()
    assert nodes.listeners == []
