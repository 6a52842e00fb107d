"""The coordinator's durable state: every write a round makes lands in one transaction."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from coordinator.persistence.database import connect, migrate
from coordinator.persistence.tables import CheckpointRow, ClientRow, RoundRow, RunRow
from coordinator.settings import storable_settings


def _write_blob(session: Session, checkpoint_id: int, parts: list[bytes | memoryview]) -> None:
    """Fill a checkpoint row's zeroblob with `parts`, in the session's transaction (SQLite only).

    Bound as a parameter, a blob is copied whole by the driver (sqlite3 binds with SQLITE_TRANSIENT);
    written through SQLite's incremental blob I/O, it goes from the parts into the pages.
    """
    connection = session.connection().connection.driver_connection
    assert connection is not None
    with connection.blobopen("checkpoints", "weights", checkpoint_id) as blob:
        for part in parts:
            blob.write(part)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RoundRecord:
    """One completed round. Numbers that are not finite become None (JSON and PostgreSQL have no inf or NaN)."""

    round: int
    seconds: float
    clients: int
    failures: int
    accuracy: float | None
    loss: float | None
    epsilon: float | None
    metrics: dict[str, Any]
    privacy: dict[str, Any] | None = None  # the DP accountant's state after this round, to resume it from

    def __post_init__(self) -> None:
        for name in ("accuracy", "loss", "epsilon"):
            object.__setattr__(self, name, finite_json(getattr(self, name)))
        object.__setattr__(self, "metrics", finite_json(self.metrics))

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "accuracy": self.accuracy,
            "loss": self.loss,
            "clients": self.clients,
            "failures": self.failures,
            "seconds": self.seconds,
            "epsilon": self.epsilon,
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class Registration:
    """Who a client is after its hello: its node, its id, and the secret issued if the node is new."""

    node_id: int
    client_id: str
    secret: str | None  # set only for a new node: the client must keep it to resume


@dataclass(frozen=True)
class RunInfo:
    id: str
    state: str
    model_spec: dict[str, Any]
    settings: dict[str, Any]
    num_rounds: int
    completed_rounds: int
    created_at: datetime


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = connect(url)
        migrate(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # runs
    def create_run(self, model_spec: dict[str, Any], settings: dict[str, Any], initial_weights: bytes) -> RunInfo:
        """A new run; its settings are stored without tokens or the database password (see `storable_settings`)."""
        settings = storable_settings(settings)
        now = _now()
        row = RunRow(
            id=uuid.uuid4().hex,
            created_at=now,
            updated_at=now,
            state="running",
            model_name=model_spec["name"],
            model_spec=model_spec,
            settings=settings,
            num_rounds=settings["rounds"],
            completed_rounds=0,
        )
        with self._session.begin() as s:
            s.add(row)
            s.flush()  # no ORM relationship orders the inserts, so the run row must exist first
            s.add(CheckpointRow(run_id=row.id, round=0, created_at=now, weights=initial_weights))
        return _info(row)

    def unfinished_run(self) -> RunInfo | None:
        with self._session() as s:
            row = s.scalars(select(RunRow).where(RunRow.state == "running").order_by(RunRow.created_at.desc())).first()
            return None if row is None else _info(row)

    def get_run(self, run_id: str | None = None) -> RunInfo:
        with self._session() as s:
            query = select(RunRow).order_by(RunRow.created_at.desc())
            if run_id is not None:
                query = query.where(RunRow.id == run_id)
            row = s.scalars(query).first()
            if row is None:
                raise LookupError(f"no run {run_id!r} in the database" if run_id else "the database holds no run")
            return _info(row)

    def list_runs(self) -> list[RunInfo]:
        with self._session() as s:
            return [_info(r) for r in s.scalars(select(RunRow).order_by(RunRow.created_at.desc())).all()]

    def set_state(self, run_id: str, state: str) -> None:
        with self._session.begin() as s:
            s.execute(update(RunRow).where(RunRow.id == run_id).values(state=state, updated_at=_now()))

    # rounds
    def record_round(self, run_id: str, record: RoundRecord, weights: bytes | Sequence[bytes | memoryview]) -> None:
        """The round's metrics, its checkpoint and the run's progress, atomically.

        `weights` is the checkpoint, whole or as the parts it is made of (a safetensors head and
        views of the tensors). SQLite gets the parts written into the row's blob one after the
        other; other databases get them joined, a copy of the model for the length of the write.
        """
        parts: list[bytes | memoryview] = [weights] if isinstance(weights, bytes) else list(weights)
        streamed = self.engine.dialect.name == "sqlite" and len(parts) > 1
        now = _now()
        with self._session.begin() as s:
            s.add(
                RoundRow(
                    run_id=run_id,
                    round=record.round,
                    finished_at=now,
                    seconds=record.seconds,
                    clients=record.clients,
                    failures=record.failures,
                    accuracy=record.accuracy,
                    loss=record.loss,
                    epsilon=record.epsilon,
                    metrics=record.metrics,
                    privacy=record.privacy,
                )
            )
            size = sum(len(p) for p in parts)
            blob = func.zeroblob(size) if streamed else parts[0] if len(parts) == 1 else b"".join(parts)
            checkpoint = CheckpointRow(run_id=run_id, round=record.round, created_at=now, weights=blob)
            s.add(checkpoint)
            if streamed:
                s.flush()
                _write_blob(s, checkpoint.id, parts)
            s.execute(update(RunRow).where(RunRow.id == run_id).values(completed_rounds=record.round, updated_at=now))

    def rounds(self, run_id: str) -> list[RoundRecord]:
        with self._session() as s:
            rows = s.scalars(select(RoundRow).where(RoundRow.run_id == run_id).order_by(RoundRow.round)).all()
            return [
                RoundRecord(
                    r.round, r.seconds, r.clients, r.failures, r.accuracy, r.loss, r.epsilon, r.metrics, r.privacy
                )
                for r in rows
            ]

    def checkpoint(self, run_id: str, round: int | None = None) -> tuple[int, bytes]:
        """The checkpoint of `round`, or the latest one."""
        with self._session() as s:
            query = select(CheckpointRow).where(CheckpointRow.run_id == run_id)
            if round is None:
                query = query.order_by(CheckpointRow.round.desc())
            else:
                query = query.where(CheckpointRow.round == round)
            row = s.scalars(query).first()
            if row is None:
                raise LookupError(f"run {run_id} has no checkpoint for round {round}")
            return row.round, row.weights

    # clients
    def register_client(
        self, client_id: str | None, secret: str | None, backend: str, agent: str | None
    ) -> Registration:
        """Resume the node of `client_id` if `secret` is its secret; otherwise issue a new node, id and secret.

        A client id is a name anyone may learn; only the secret proves it. So a wrong or missing
        secret never reaches the named node: it gets a fresh one, as a bare hello does. Nodes
        registered before secrets existed (NULL `secret_hash`) cannot be resumed at all.
        """
        now = _now()
        with self._session.begin() as s:
            row = (
                None
                if client_id is None or secret is None
                else s.scalars(select(ClientRow).where(ClientRow.client_id == client_id)).first()
            )
            issued = None
            if row is None or row.secret_hash is None or not hmac.compare_digest(row.secret_hash, _hash(secret or "")):
                issued = secrets.token_urlsafe(32)  # 256 random bits
                row = ClientRow(client_id=uuid.uuid4().hex, secret_hash=_hash(issued), backend=backend, first_seen=now)
                s.add(row)
            row.backend, row.agent, row.last_seen = backend, agent, now
            s.flush()
            return Registration(row.id, row.client_id, issued)


def _hash(secret: str) -> str:
    """SHA-256 hex: the secret has 256 random bits, so a fast hash is enough (no dictionary to attack)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def finite_json(value: Any) -> Any:
    """`value` with every float that is not finite, and every int beyond float range, replaced by None."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**1023:
        return None
    return value


def _info(row: RunRow) -> RunInfo:
    return RunInfo(
        row.id, row.state, row.model_spec, row.settings, row.num_rounds, row.completed_rounds, row.created_at
    )
