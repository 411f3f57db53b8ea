"""Items record the order of their cluster assignment (``clustered_seq``), so each worker's
in-memory cluster index reads only new assignments; existing clustered items take their id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 23:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clustered_seq", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_items_clustered_seq"), ["clustered_seq"], unique=False)
    op.execute("UPDATE items SET clustered_seq = id WHERE cluster_id IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_items_clustered_seq"))
        batch_op.drop_column("clustered_seq")
