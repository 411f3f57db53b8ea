"""Exchange pushes: banks pushed to exchanges that take submissions, once per (entry, state).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 13:30:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "exchange_pushes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("exchange_id", sa.Integer(), nullable=False),
        sa.Column("bank_id", sa.Integer(), nullable=False),
        sa.Column("follow", sa.Boolean(), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("run_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("claimed_until", sa.Float(), nullable=True),
        sa.Column("retry_not_before", sa.Float(), nullable=True),
        sa.Column("last_run_ts", sa.Float(), nullable=True),
        sa.Column("last_success_ts", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["bank_id"],
            ["banks.id"],
            name=op.f("fk_exchange_pushes_bank_id_banks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["exchange_id"],
            ["exchanges.id"],
            name=op.f("fk_exchange_pushes_exchange_id_exchanges"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_pushes")),
        sa.UniqueConstraint("exchange_id", "bank_id", name="uq_exchange_pushes_exchange_bank"),
    )
    with op.batch_alter_table("exchange_pushes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exchange_pushes_bank_id"), ["bank_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_exchange_pushes_exchange_id"), ["exchange_id"], unique=False
        )
    op.create_table(
        "exchange_push_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("push_id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("signal_type", sa.String(length=32), nullable=False),
        sa.Column("signal", sa.String(length=512), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("pushed_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["push_id"],
            ["exchange_pushes.id"],
            name=op.f("fk_exchange_push_entries_push_id_exchange_pushes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_push_entries")),
        sa.UniqueConstraint("push_id", "entry_id", name="uq_exchange_push_entries_entry"),
    )
    with op.batch_alter_table("exchange_push_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_exchange_push_entries_push_id"), ["push_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("exchange_push_entries")
    op.drop_table("exchange_pushes")
