"""Alembic environment: the caller hands over a live connection (see database.migrate)."""

from alembic import context

from coordinator.persistence.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
