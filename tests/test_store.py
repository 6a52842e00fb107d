"""The persistence store: runs, rounds with their checkpoints, run states, clients, reopening a database."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import create_engine, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from coordinator.persistence.database import SQLITE_CACHE_KIB, connect, migrate
from coordinator.persistence.store import RoundRecord, Store
from coordinator.persistence.tables import ClientRow, RunRow

SPEC = {"name": "mlp", "layers": [{"kind": "dense", "units": 8}], "input": [4]}
SETTINGS = {"rounds": 3, "clients": 2, "lr": 0.05, "dp": {"clip": 1.0, "noise": None}}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/p.db"
        return
    server = request.getfixturevalue("postgres_url")
    name = f"store_{uuid.uuid4().hex}"
    admin = create_engine(server.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    yield server.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def store(url) -> Iterator[Store]:
    s = Store(url)
    yield s
    s.close()


def record(n, **over) -> RoundRecord:
    fields = dict(round=n, seconds=1.5 * n, clients=2, failures=n % 2, accuracy=0.5 + n / 10, loss=2.0 / n)
    fields.update(epsilon=None if n == 1 else 0.25 * n, metrics={"per_client": [n, n + 1], "note": f"r{n}"})
    fields.update(over)
    return RoundRecord(**fields)


def test_every_sqlite_connection_keeps_a_small_page_cache(tmp_path):
    """Checkpoints are written through SQLite's page cache: each pooled connection would otherwise keep
    2 MiB of checkpoint pages, memory the coordinator gains round after round (see `SQLITE_CACHE_KIB`)."""
    engine = connect(f"sqlite:///{tmp_path}/p.db")
    with engine.connect() as first, engine.connect() as second:
        for c in (first, second):
            assert c.exec_driver_sql("PRAGMA cache_size").scalar() == -SQLITE_CACHE_KIB
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_create_run_is_visible_everywhere_with_its_initial_checkpoint(store):
    run = store.create_run(SPEC, SETTINGS, b"\x00initial\xff")
    assert len(run.id) == 32
    assert (run.state, run.model_spec, run.settings, run.num_rounds, run.completed_rounds) == (
        "running",
        SPEC,
        SETTINGS,
        3,
        0,
    )
    for got in (store.get_run(run.id), store.get_run(), store.unfinished_run(), *store.list_runs()):
        assert got is not None
        assert (got.id, got.state, got.model_spec, got.settings) == (run.id, "running", SPEC, SETTINGS)
        assert (got.num_rounds, got.completed_rounds) == (3, 0)
    assert len(store.list_runs()) == 1
    assert store.checkpoint(run.id) == (0, b"\x00initial\xff")
    assert store.checkpoint(run.id, round=0) == (0, b"\x00initial\xff")
    assert store.rounds(run.id) == []


def test_a_checkpoint_in_parts_is_stored_as_their_concatenation(store):
    # The run loop hands over the safetensors head and views of the tensors; SQLite writes them into the blob.
    run = store.create_run(SPEC, SETTINGS, b"w0")
    tensor = np.arange(1000, dtype=np.float32)
    store.record_round(run.id, record(1), [b"head", tensor.view(np.uint8).data, memoryview(b"")])
    assert store.checkpoint(run.id) == (1, b"head" + tensor.tobytes())
    store.record_round(run.id, record(2), [b"only"])
    assert store.checkpoint(run.id) == (2, b"only")
    assert store.checkpoint(run.id, round=1) == (1, b"head" + tensor.tobytes())


def test_record_round_stores_the_round_its_checkpoint_and_progress(store):
    run = store.create_run(SPEC, SETTINGS, b"w0")
    for n in (1, 2, 3):
        store.record_round(run.id, record(n), f"w{n}".encode())
        assert store.get_run(run.id).completed_rounds == n
        assert store.checkpoint(run.id) == (n, f"w{n}".encode())
    assert store.rounds(run.id) == [record(1), record(2), record(3)]
    assert store.rounds(run.id)[1].metrics == {"per_client": [2, 3], "note": "r2"}
    assert store.rounds(run.id)[0].epsilon is None
    assert [store.checkpoint(run.id, round=n) for n in (0, 1, 2)] == [(0, b"w0"), (1, b"w1"), (2, b"w2")]
    assert store.rounds(run.id)[0].to_dict() == {
        "round": 1,
        "accuracy": 0.6,
        "loss": 2.0,
        "clients": 2,
        "failures": 1,
        "seconds": 1.5,
        "epsilon": None,
        "metrics": {"per_client": [1, 2], "note": "r1"},
    }


def test_rounds_and_checkpoints_belong_to_their_own_run(store):
    a = store.create_run(SPEC, SETTINGS, b"a0")
    b = store.create_run(SPEC, {**SETTINGS, "rounds": 7}, b"b0")
    store.record_round(a.id, record(1), b"a1")
    assert store.rounds(b.id) == [] and store.checkpoint(b.id) == (0, b"b0")
    assert store.get_run(b.id).completed_rounds == 0 and store.get_run(b.id).num_rounds == 7
    assert store.checkpoint(a.id) == (1, b"a1")


def test_a_failed_round_write_changes_nothing(store):
    run = store.create_run(SPEC, SETTINGS, b"w0")
    store.record_round(run.id, record(1), b"w1")
    with pytest.raises(IntegrityError):  # round 1 again: the unique (run, round) rolls back the whole write
        store.record_round(run.id, record(1, accuracy=0.99), b"other")
    assert store.rounds(run.id) == [record(1)]
    assert store.checkpoint(run.id) == (1, b"w1")
    assert store.get_run(run.id).completed_rounds == 1
    with pytest.raises(IntegrityError):  # no such run: the foreign key refuses it
        store.record_round("0" * 32, record(1), b"x")
    assert store.rounds("0" * 32) == []


def test_finished_states_leave_no_unfinished_run(store):
    older = store.create_run(SPEC, SETTINGS, b"o")
    newer = store.create_run(SPEC, SETTINGS, b"n")
    assert store.unfinished_run().id == newer.id  # the newest running one
    assert store.get_run().id == newer.id
    store.set_state(newer.id, "completed")
    assert store.unfinished_run().id == older.id
    store.set_state(older.id, "stopped")
    assert store.unfinished_run() is None
    assert [(r.id, r.state) for r in store.list_runs()] == [(newer.id, "completed"), (older.id, "stopped")]
    store.set_state(older.id, "failed")
    assert store.get_run(older.id).state == "failed"
    assert store.get_run().id == newer.id  # the newest, whatever its state
    store.set_state(older.id, "running")
    assert store.unfinished_run().id == older.id


def test_unknown_runs_rounds_and_states(store):
    with pytest.raises(LookupError, match="holds no run"):
        store.get_run()
    assert store.unfinished_run() is None and store.list_runs() == []
    run = store.create_run(SPEC, SETTINGS, b"w0")
    with pytest.raises(LookupError, match="no run 'nope'"):
        store.get_run("nope")
    with pytest.raises(LookupError, match="no checkpoint for round 5"):
        store.checkpoint(run.id, round=5)
    with pytest.raises(LookupError, match="no checkpoint for round None"):
        store.checkpoint("nope")
    assert store.rounds("nope") == []
    store.set_state("nope", "failed")  # an unknown id is a silent no-op
    assert [r.state for r in store.list_runs()] == ["running"]


def test_a_reopened_store_sees_everything(url):
    first = Store(url)
    done = first.create_run(SPEC, SETTINGS, b"d0")
    first.record_round(done.id, record(1), b"d1")
    first.set_state(done.id, "completed")
    live = first.create_run(SPEC, SETTINGS, b"l0")
    first.record_round(live.id, record(1), b"l1")
    first.record_round(live.id, record(2), b"l2")
    first_client = first.register_client(None, None, "python", "agent/1")
    first.close()

    again = Store(url)  # migrates an already migrated database
    migrate(again.engine)  # and once more, by hand
    try:
        assert (again.unfinished_run() or done).id == live.id
        assert [(r.id, r.state, r.completed_rounds) for r in again.list_runs()] == [
            (live.id, "running", 2),
            (done.id, "completed", 1),
        ]
        assert again.get_run(live.id).model_spec == SPEC and again.get_run(live.id).settings == SETTINGS
        assert again.rounds(live.id) == [record(1), record(2)]
        assert again.checkpoint(live.id) == (2, b"l2") and again.checkpoint(live.id, round=1) == (1, b"l1")
        assert again.checkpoint(done.id) == (1, b"d1")
        resumed = again.register_client(first_client.client_id, first_client.secret, "python", "agent/1")
        assert (resumed.node_id, resumed.client_id, resumed.secret) == (
            first_client.node_id,
            first_client.client_id,
            None,
        )
        again.record_round(live.id, record(3), b"l3")
        assert again.get_run(live.id).completed_rounds == 3
    finally:
        again.close()


def test_register_client_resumes_a_node_only_with_its_secret(store):
    first = store.register_client(None, None, "wasm", "Firefox")
    assert len(first.client_id) == 32 and int(first.client_id, 16) >= 0
    assert first.secret is not None and len(first.secret) >= 43  # 32 random bytes, base64url
    other = store.register_client(None, None, "wasm", "Firefox")
    assert other.client_id != first.client_id and other.node_id != first.node_id and other.secret != first.secret
    resumed = store.register_client(first.client_id, first.secret, "webgpu", None)
    assert (resumed.node_id, resumed.client_id, resumed.secret) == (first.node_id, first.client_id, None)
    for secret in (None, "", other.secret, first.secret[:-1] + "x"):
        thief = store.register_client(first.client_id, secret, "python", "thief")
        assert thief.node_id not in (first.node_id, other.node_id)
        assert thief.client_id not in (first.client_id, other.client_id)
        assert thief.secret is not None and thief.secret != first.secret
    with store.engine.connect() as c:
        rows = {r.client_id: r for r in c.execute(select(ClientRow.__table__))}
    assert (rows[first.client_id].backend, rows[first.client_id].agent) == ("webgpu", None)  # updated on resume
    assert rows[first.client_id].last_seen >= rows[first.client_id].first_seen
    # Only the secret's SHA-256 is stored, never the secret.
    assert rows[first.client_id].secret_hash == hashlib.sha256(first.secret.encode()).hexdigest()
    assert not any(first.secret in str(tuple(r)) for r in rows.values())


def test_a_round_keeps_its_privacy_state(store):
    run = store.create_run(SPEC, SETTINGS, b"w0")
    state = {"schema_version": 1, "compositions": [{"event": {"noise_multiplier": 1.0}, "count": 2}]}
    store.record_round(run.id, record(1), b"w1")
    store.record_round(run.id, record(2, privacy=state), b"w2")
    assert [r.privacy for r in store.rounds(run.id)] == [None, state]
    assert "privacy" not in store.rounds(run.id)[1].to_dict()  # the accountant's ledger is not the public status


def test_numbers_that_json_cannot_hold_are_stored_as_none(store):
    # Before: an infinite round mean reached the JSON column; SQLite wrote `Infinity`, PostgreSQL refused the round.
    run = store.create_run(SPEC, SETTINGS, b"w0")
    odd = record(1, loss=float("inf"), metrics={"train_loss": float("inf"), "m": [float("nan"), 1.0], "n": 10**400})
    store.record_round(run.id, odd, b"w1")
    (got,) = store.rounds(run.id)
    assert got.loss is None and got.metrics == {"train_loss": None, "m": [None, 1.0], "n": None}


def test_a_client_without_a_stored_secret_cannot_be_resumed_by_its_id(store):
    """Rows from before secrets existed have none: their id alone must not take them over."""
    legacy = store.register_client(None, None, "python", None)
    with store.engine.begin() as c:
        c.execute(update(ClientRow).where(ClientRow.client_id == legacy.client_id).values(secret_hash=None))
    for secret in (None, "", legacy.secret):
        again = store.register_client(legacy.client_id, secret, "python", None)
        assert again.node_id != legacy.node_id and again.client_id != legacy.client_id


def test_runs_keep_no_tokens_and_no_database_password(store):
    settings = {**SETTINGS, "join_token": "join-me", "admin_token": "admin-me", "db": "postgresql://u:hunter2@db/p"}
    run = store.create_run(SPEC, settings, b"w")
    for got in (run, store.get_run(run.id)):
        assert "join_token" not in got.settings and "admin_token" not in got.settings
        assert got.settings["db"] == "postgresql://u:***@db/p"
    with store.engine.connect() as c:
        stored = str(c.execute(select(RunRow.__table__)).all())
    assert not any(secret in stored for secret in ("join-me", "admin-me", "hunter2"))


def test_migrating_scrubs_the_secrets_that_older_runs_kept(url):
    """Runs created before secrets were kept out still held them in their settings: 0003 removes them."""

    engine = connect(url)
    migrate(engine, "0002")
    old = {**SETTINGS, "join_token": "join-me", "admin_token": "admin-me", "db": "postgresql://u:hunter2@db/p"}
    with engine.begin() as c:
        c.execute(
            insert(RunRow).values(
                id="old", created_at=text("CURRENT_TIMESTAMP"), updated_at=text("CURRENT_TIMESTAMP"), state="running",
                model_name="mlp", model_spec=SPEC, settings=old, num_rounds=3, completed_rounds=0,
            )
        )  # fmt: skip
    engine.dispose()
    store = Store(url)  # migrates to the newest schema
    try:
        assert store.get_run("old").settings == {**SETTINGS, "db": "postgresql://u:***@db/p"}
    finally:
        store.close()
