"""HMA bank content: a bank may hold the same hash in several entries (HMA creates a content
item per add), entries keep HMA's user metadata and a future ``disable_until_ts``, and banks
keep HMA's fractional ``matching_enabled_ratio``; signal types keep HMA's ``enabled_ratio``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 10:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signal_type_settings",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("enabled_ratio", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_signal_type_settings")),
    )
    with op.batch_alter_table("banks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("enabled_ratio", sa.Float(), server_default="1.0", nullable=False)
        )
        batch_op.create_check_constraint(
            op.f("ck_banks_enabled_ratio"), "enabled_ratio BETWEEN 0 AND 1"
        )
    with op.batch_alter_table(
        "bank_entries", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint("uq_bank_entries_signal", type_="unique")
        batch_op.create_index(
            "ix_bank_entries_signal", ["signal_type", "signal", "bank_id"], unique=False
        )
        batch_op.add_column(sa.Column("disabled_until", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("meta", sa.JSON(), nullable=True))


def downgrade() -> None:
    # entries that repeat a hash in the same bank cannot survive the unique key: keep the first
    op.execute(
        "DELETE FROM bank_entries WHERE id NOT IN "
        "(SELECT MIN(id) FROM bank_entries GROUP BY signal_type, signal, bank_id)"
    )
    with op.batch_alter_table(
        "bank_entries", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_column("meta")
        batch_op.drop_column("disabled_until")
        batch_op.drop_index("ix_bank_entries_signal")
        batch_op.create_unique_constraint(
            "uq_bank_entries_signal", ["signal_type", "signal", "bank_id"]
        )
    with op.batch_alter_table("banks", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_banks_enabled_ratio"), type_="check")
        batch_op.drop_column("enabled_ratio")
    op.drop_table("signal_type_settings")
