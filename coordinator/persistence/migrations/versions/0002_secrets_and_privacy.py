"""Client secrets (stored as hashes) and each round's privacy-accountant state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        # SHA-256 of the secret issued at the client's first welcome; NULL for clients from before secrets.
        batch.add_column(sa.Column("secret_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("rounds") as batch:
        # The DP accountant's state after this round, so that a resumed run's ε never goes backwards.
        batch.add_column(sa.Column("privacy", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("privacy")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("secret_hash")
