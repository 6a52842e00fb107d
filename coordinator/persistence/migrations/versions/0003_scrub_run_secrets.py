"""Scrub secrets that runs created before 0.1's hardening kept in their settings.

Runs stored the join token, the admin token and the database URL with its password
in `runs.settings`. New runs store none of them (`coordinator.settings.storable_settings`);
this removes them from the rows already there. Self-contained on purpose: a migration
must not change when the application code does.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SECRET_KEYS = ("join_token", "admin_token")


def _scrubbed(settings: dict) -> dict:  # type: ignore[type-arg]
    kept = {k: v for k, v in settings.items() if k not in SECRET_KEYS}
    if isinstance(kept.get("db"), str):
        try:
            kept["db"] = make_url(kept["db"]).render_as_string(hide_password=True)
        except ArgumentError:
            kept["db"] = "<unparseable database URL>"
    return kept


def upgrade() -> None:
    runs = sa.table("runs", sa.column("id", sa.String), sa.column("settings", sa.JSON))
    connection = op.get_bind()
    for run_id, settings in connection.execute(sa.select(runs.c.id, runs.c.settings)).all():
        if isinstance(settings, dict) and _scrubbed(settings) != settings:
            connection.execute(runs.update().where(runs.c.id == run_id).values(settings=_scrubbed(settings)))


def downgrade() -> None:
    pass  # what was scrubbed is gone, as intended
