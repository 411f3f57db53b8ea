"""Exchange push and feedback: banks shared with Tipline peers, what the feed published of
each entry (its change sequence) and the peers' opinions.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 02:40:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "exchange_shares",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bank_id", sa.Integer(), nullable=False),
        sa.Column("peer", sa.String(length=200), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_read_at", sa.Float(), nullable=True),
        sa.Column("accept_into_bank_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["accept_into_bank_id"],
            ["banks.id"],
            name=op.f("fk_exchange_shares_accept_into_bank_id_banks"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["bank_id"],
            ["banks.id"],
            name=op.f("fk_exchange_shares_bank_id_banks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_shares")),
        sa.UniqueConstraint("bank_id", "peer", name="uq_exchange_shares_bank_peer"),
    )
    with op.batch_alter_table("exchange_shares", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exchange_shares_bank_id"), ["bank_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_exchange_shares_peer"), ["peer"], unique=False)

    op.create_table(
        "exchange_share_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("share_id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("signal_type", sa.String(length=32), nullable=False),
        sa.Column("signal", sa.String(length=512), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("changed_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["share_id"],
            ["exchange_shares.id"],
            name=op.f("fk_exchange_share_entries_share_id_exchange_shares"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_share_entries")),
        sa.UniqueConstraint("share_id", "entry_id", name="uq_exchange_share_entries_entry"),
    )
    with op.batch_alter_table("exchange_share_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_exchange_share_entries_share_id"), ["share_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_exchange_share_entries_seq"), ["seq"], unique=False)

    op.create_table(
        "exchange_share_opinions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("share_id", sa.Integer(), nullable=False),
        sa.Column("entry_key", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["share_id"],
            ["exchange_shares.id"],
            name=op.f("fk_exchange_share_opinions_share_id_exchange_shares"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_share_opinions")),
        sa.UniqueConstraint("share_id", "entry_key", name="uq_exchange_share_opinions_key"),
    )
    with op.batch_alter_table("exchange_share_opinions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_exchange_share_opinions_share_id"), ["share_id"], unique=False
        )

    op.create_table(
        "exchange_share_submissions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("share_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["bank_entries.id"],
            name=op.f("fk_exchange_share_submissions_entry_id_bank_entries"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["share_id"],
            ["exchange_shares.id"],
            name=op.f("fk_exchange_share_submissions_share_id_exchange_shares"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_share_submissions")),
        sa.UniqueConstraint("share_id", "key", name="uq_exchange_share_submissions_key"),
    )
    with op.batch_alter_table("exchange_share_submissions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_exchange_share_submissions_share_id"), ["share_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("exchange_share_submissions")
    op.drop_table("exchange_share_opinions")
    op.drop_table("exchange_share_entries")
    op.drop_table("exchange_shares")
