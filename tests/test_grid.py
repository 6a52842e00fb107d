"""The grid against a fake `Nodes`, with no sockets: replies, lost nodes, late replies, timeouts, pause and stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

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
from coordinator.protocol import Error, Result, Task, decode_tensors, encode_tensors
from tests.fake_nodes import Answer, FakeNodes

SPEC = load_spec("mnist-mlp")
SHAPES = SPEC.wire_shapes()


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
    shared = [s for (_, task, _), s in zip(nodes.sent, nodes.shared, strict=True) if task.kind == "train"]
    assert len({id(s) for s in shared[:3]}) == 1  # one encoded broadcast shared by every node
    assert len({id(f) for f in shared[0].frames(2**24)}) == len(shared[0].frames(2**24))
    assert train.bytes_out == 3 * shared[0].wire_bytes() and train.bytes_in == 3 * len(delta_of(0.1))
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
    assert thread.is_alive() and nodes.sent == [] and grid.control.held
    grid.control.resume()
    thread.join(5)
    assert not thread.is_alive() and len(out) == 1 and not grid.control.held


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


def test_a_400_digit_metric_fails_only_its_client_and_the_round_goes_on() -> None:
    # Before: math.isfinite raised OverflowError out of send_and_receive and the run failed.
    def answer(n: int, t: Task) -> Result:
        reply = good(n, t)
        return Result(t.task_id, reply.num_examples, {"train_loss": 10**400}, reply.delta) if n == 2 else reply

    grid, nodes, reports = make([1, 2, 3], answer)
    replies = list(grid.send_and_receive(train_messages(grid, weights(), [1, 2, 3]), timeout=5))
    assert sorted((r.metadata.src_node_id, r.has_error()) for r in replies) == [(1, False), (2, True), (3, False)]
    ((node_id, error),) = nodes.rejected
    assert node_id == 2 and error.code == "invalid_update" and "'train_loss'" in error.message
    assert reports[0].ok == 2 and reports[0].rejected == 1


def test_any_exception_while_checking_a_reply_becomes_that_clients_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # An unforeseen decoder failure (the BF16 KeyError of issue 10, say) must not escape the grid.
    import coordinator.federation.replies as replies

    real = decode_tensors

    def decode(payload: bytes, shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
        if payload == delta_of(0.2):
            raise KeyError("BF16")
        return real(payload, shapes)

    monkeypatch.setattr(replies, "decode_tensors", decode)
    grid, nodes, reports = make([1, 2])
    replies_out = list(grid.send_and_receive(train_messages(grid, weights(), [1, 2]), timeout=5))
    assert sorted((r.metadata.src_node_id, r.has_error()) for r in replies_out) == [(1, False), (2, True)]
    ((node_id, error),) = nodes.rejected
    assert node_id == 2 and error.code == "invalid_update" and "KeyError" in error.message
    assert reports[0].rejected == 1 and reports[0].failures == [f"node 2: invalid_update: {error.message}"]


def test_a_nodes_implementation_that_fails_to_reject_does_not_end_the_round() -> None:
    def answer(n: int, t: Task) -> Result:
        return Result(t.task_id, 10**9, {}, delta_of(1.0))

    grid, nodes, reports = make([1], answer)

    def broken_reject(node_id: int, error: Error) -> bool:
        raise ConnectionError("socket gone")

    nodes.reject = broken_reject  # type: ignore[method-assign]
    (reply,) = grid.send_and_receive(train_messages(grid, weights(), [1]), timeout=5)
    assert reply.has_error() and "not in 1..10000" in str(reply.error.reason)
    assert reports[0].rejected == 1


def test_a_client_error_message_is_shortened_in_the_failures() -> None:
    grid, _, reports = make([1], lambda n, t: Error("training_failed", "x" * 10_000, t.task_id))
    grid.send_and_receive(train_messages(grid, weights(), [1]), timeout=5)
    assert len(reports[0].failures[0]) < 250


def test_the_grid_clips_deltas_to_its_bound_and_counts_them() -> None:
    from coordinator.federation.replies import ReplyLimits

    grid, _, reports = make([1, 2], limits=ReplyLimits(clip_norm=1.0))
    start = weights()
    replies = list(grid.send_and_receive(train_messages(grid, start, [1, 2]), timeout=5))
    assert reports[0].clipped == 2 and reports[0].ok == 2
    for reply in replies:
        arrays = reply.content.array_records["arrays"]
        norm = np.sqrt(sum(np.square(arrays[n].numpy() - start[n].numpy(), dtype=np.float64).sum() for n in SHAPES))
        assert norm == pytest.approx(1.0, rel=1e-4)


def test_the_mean_of_huge_finite_metrics_is_finite() -> None:
    # Before: np.mean of two 1.7e308 values was inf, and the round's record broke /api/status and PostgreSQL.
    report = PhaseReport("train", 1, client_metrics=[{"train_loss": 1.7e308}, {"train_loss": 1.7e308}])
    assert report.mean("train_loss") == pytest.approx(1.7e308)
    assert report.max("train_loss") == 1.7e308
    odd = PhaseReport("train", 1, client_metrics=[{"a": float("inf")}, {"a": 10**400}, {"a": 2.0}, {"b": 1.0}])
    assert odd.mean("a") == 2.0 and odd.max("a") == 2.0 and odd.mean("c") is None


def test_a_reply_to_that_is_not_a_task_id_is_not_accepted() -> None:
    grid, nodes, _ = make([1], lambda n, t: None)
    thread = threading.Thread(
        target=grid.send_and_receive, args=(train_messages(grid, weights(), [1]),), kwargs={"timeout": 0.3}
    )
    thread.start()
    while not nodes.sent:
        time.sleep(0.01)
    assert not grid.deliver(1, Result(["not", "hashable"], 1, {}, b""))  # type: ignore[arg-type]
    thread.join()
