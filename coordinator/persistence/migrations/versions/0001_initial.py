"""Initial schema: runs, rounds, checkpoints, clients.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_spec", sa.JSON, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("num_rounds", sa.Integer, nullable=False),
        sa.Column("completed_rounds", sa.Integer, nullable=False),
    )
    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("clients", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("accuracy", sa.Float, nullable=True),
        sa.Column("loss", sa.Float, nullable=True),
        sa.Column("epsilon", sa.Float, nullable=True),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.UniqueConstraint("run_id", "round"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("weights", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("run_id", "round"),
    )
    op.create_table(
        "clients",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("client_id", sa.String(128), nullable=False, unique=True),
        sa.Column("backend", sa.String(64), nullable=False),
        sa.Column("agent", sa.String(256), nullable=True),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("clients", "checkpoints", "rounds", "runs"):
        op.drop_table(table)
