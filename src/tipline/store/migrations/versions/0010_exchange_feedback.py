"""Exchange feedback: opinions on partners' entries queued once per (entry, opinion).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 02:40:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "exchange_feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("exchange_id", sa.Integer(), nullable=False),
        sa.Column("record_key", sa.String(length=600), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.Column("signal_type", sa.String(length=32), nullable=False),
        sa.Column("signal", sa.String(length=512), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["exchange_id"],
            ["exchanges.id"],
            name=op.f("fk_exchange_feedback_exchange_id_exchanges"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_feedback")),
        sa.UniqueConstraint(
            "exchange_id", "record_key", "category", name="uq_exchange_feedback_opinion"
        ),
    )
    with op.batch_alter_table("exchange_feedback", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_exchange_feedback_exchange_id"), ["exchange_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_exchange_feedback_state"), ["state"], unique=False)


def downgrade() -> None:
    op.drop_table("exchange_feedback")
