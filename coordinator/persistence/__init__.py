"""Runs, rounds, clients and checkpoints in any SQLAlchemy database, migrated by Alembic."""
