"""Engine creation and migration to the newest schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# SQLite's page cache per connection, in KiB. Each round's checkpoint (a model) is written through it,
# so with SQLite's default of 2 MiB every pooled connection kept 2 MiB of checkpoint pages: at K = 1,000
# on mnist-cnn the coordinator's memory between rounds grew by 0.3 of a model a round until the pool's
# connections were full. The coordinator reads little (the status, a checkpoint at resume): a small
# cache costs it nothing measurable (a round's write: 55-98 ms either way).
SQLITE_CACHE_KIB = 256


def connect(url: str) -> Engine:
    if url.startswith("sqlite"):
        # No statement cache: a cached INSERT keeps its last bound values, and sqlite3 binds a blob by copying
        # it, so every connection would hold a copy of the last checkpoint (a model) until its next insert.
        connect_args = {"check_same_thread": False, "timeout": 30, "cached_statements": 0}
        engine = create_engine(url, connect_args=connect_args)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets the status API read while a round commits; a killed process loses no commit. In WAL,
            # synchronous=NORMAL syncs at checkpoints, not at every commit: a killed process still loses
            # nothing (the commit is in the OS's cache), and a power cut loses at most the last rounds,
            # never the database. An fsync per round was 2% of a K = 100 mnist-mlp round here.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (the newest by default); a no-op when it is there already."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
