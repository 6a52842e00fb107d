"""DP rounds through the real run loop, store and grid, with fake nodes: the server clips, partial rounds count,
and a resumed run's ε carries on from where it stopped."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from flwr.serverapp import PrivacyConfig, RdpAccountant, SamplingMethod
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent, NeighboringRelation

from coordinator.federation.run_loop import RunLoop
from coordinator.federation.status import RunStatus
from coordinator.federation.strategies import build_strategy
from coordinator.models.spec import load_spec
from coordinator.persistence.store import RoundRecord, Store
from coordinator.protocol import Error, Result, Task, decode_tensors, encode_tensors
from coordinator.settings import Settings
from tests.fake_nodes import FakeNodes

SHAPES = load_spec("mnist-mlp").wire_shapes()
CLIP = 1.0
NOISE = 1.0


def delta_of(value: float) -> bytes:
    return encode_tensors({name: np.full(shape, value, np.float32) for name, shape in SHAPES.items()})


def honest(node_id: int, task: Task) -> Result:
    return Result(task.task_id, 1, {"train_loss": 0.5}, delta_of(0.001 * node_id))


class Sink:
    """Commits rounds like the coordinator's recorder; `stop_after` stops the run there, as a kill -9 would."""

    def __init__(self, store: Store, stop_after: int | None = None) -> None:
        self.store = store
        self.stop_after = stop_after
        self.loop: RunLoop | None = None
        self.ended: list[str] = []

    def on_round(self, run_id: str, record: RoundRecord, checkpoint: Sequence[bytes | memoryview]) -> None:
        self.store.record_round(run_id, record, checkpoint)
        if record.round == self.stop_after and self.loop is not None:
            self.loop.control.stop()

    def on_end(self, run_id: str, state: str, message: str) -> None:
        self.ended.append(f"{state}: {message}")  # the run stays "running" in the store: resumable


def run(store: Store, nodes: FakeNodes, *, stop_after: int | None = None, **overrides: object) -> tuple[RunLoop, Sink]:
    values: dict[str, object] = dict(
        rounds=3, min_clients=4, clients_per_round=4, dp_clip=CLIP, dp_noise=NOISE, round_timeout=10.0
    )
    settings = Settings(**{**values, **overrides})  # type: ignore[arg-type]
    sink = Sink(store, stop_after)
    loop = RunLoop(settings, store, nodes, RunStatus(), sink)
    nodes.grid = loop.grid
    sink.loop = loop
    loop.run_to_end()
    return loop, sink


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path}/dp.db")


def weights_of(store: Store, run_id: str, round_number: int) -> dict[str, np.ndarray]:
    return decode_tensors(store.checkpoint(run_id, round_number)[1])


def change(store: Store, run_id: str, round_number: int) -> float:
    before, after = weights_of(store, run_id, round_number - 1), weights_of(store, run_id, round_number)
    return l2_norm({k: after[k] - before[k] for k in after})


def l2_norm(tensors: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(np.square(t, dtype=np.float64).sum() for t in tensors.values())))


def expected_epsilon(releases: int) -> float:
    accountant = RdpAccountant(
        PrivacyConfig(1e-5, 4, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION)
    )
    accountant.compose(GaussianPrivacyEvent(NOISE, 4, 4), releases)
    return accountant.get_privacy_spent().epsilon


def test_the_server_clips_an_unclipped_delta_under_dp(store: Store) -> None:
    # Before: the client-side DP wrapper trusted the client, and a delta of norm ~3e5 moved the model by ~1e5.
    def huge(node_id: int, task: Task) -> Result:
        return Result(task.task_id, 1, {}, delta_of(1000.0))

    loop, sink = run(store, FakeNodes([1, 2, 3, 4], huge), rounds=1, dp_noise=1e-3)
    assert sink.ended == ["completed: run complete"]
    # Four deltas clipped to C average to at most C; the noise (z·C/4 per weight, z = 1e-3) adds about 0.08.
    assert change(store, loop.run.id, 1) <= CLIP * 1.15
    (record,) = store.rounds(loop.run.id)
    assert record.clients == 4 and record.metrics["clipped"] == 4


def test_half_the_clients_failing_or_vanishing_still_updates_the_model_and_spends_epsilon(store: Store) -> None:
    # Before: Flower's wrapper skipped aggregation when any reply was an error: no update, no ε.
    nodes = FakeNodes([1, 2, 3, 4], honest)

    def half_fail(node_id: int, task: Task) -> Result | Error | None:
        if node_id == 3:
            return Error("training_failed", "out of memory", task.task_id)
        if node_id == 4:  # its connection drops mid-round
            nodes.drop(node_id)
            return None
        return honest(node_id, task)

    nodes.answer = half_fail
    loop, sink = run(store, nodes)

    assert sink.ended == ["completed: run complete"]
    records = store.rounds(loop.run.id)
    assert [(r.clients, r.failures) for r in records] == [(2, 2)] * 3
    assert all(change(store, loop.run.id, n) > 0 for n in (1, 2, 3))
    epsilons = [r.epsilon or 0.0 for r in records]
    assert epsilons == pytest.approx([expected_epsilon(n) for n in (1, 2, 3)])
    assert epsilons[0] < epsilons[1] < epsilons[2]


def test_epsilon_after_a_resume_carries_on_from_before(store: Store) -> None:
    first, sink = run(store, FakeNodes([1, 2, 3, 4], honest), stop_after=2)
    assert sink.ended == ["stopped: stopped by the operator"]
    before = [r.epsilon or 0.0 for r in store.rounds(first.run.id)]
    assert len(before) == 2

    second, sink = run(store, FakeNodes([1, 2, 3, 4], honest))  # a new coordinator on the same database resumes the run
    assert second.run.id == first.run.id and sink.ended == ["completed: run complete"]
    after = [r.epsilon or 0.0 for r in store.rounds(second.run.id)]
    assert after[:2] == before
    # Before: the accountant restarted from zero, and round 3 reported the ε of one release.
    assert after[2] == pytest.approx(expected_epsilon(3)) and after[2] > before[1]
    # Three identical releases are stored as one ledger entry, however long the run.
    privacy = store.rounds(second.run.id)[-1].privacy
    assert privacy is not None and privacy["compositions"] == [
        {"event": {"noise_multiplier": NOISE, "sample_size": 4, "population_size": 4}, "count": 3}
    ]


def test_a_run_stored_without_accountant_state_replays_its_releases() -> None:
    from coordinator.federation.strategies import restore_privacy

    strategy = build_strategy(Settings(min_clients=4, clients_per_round=4, dp_clip=CLIP, dp_noise=NOISE))
    restore_privacy(strategy, None, releases=2)
    spent = strategy.privacy_spent()  # type: ignore[attr-defined]
    assert spent.num_releases == 2 and spent.epsilon == pytest.approx(expected_epsilon(2))
