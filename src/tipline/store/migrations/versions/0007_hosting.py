"""Hosting attribution (docs/hosting.md): imported IP-to-ASN data sets with their address
ranges, and the operator's provider directory.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 02:40:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hosting_datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("source_sha256", sa.String(length=64), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hosting_datasets")),
        sa.UniqueConstraint("name", name=op.f("uq_hosting_datasets_name")),
    )
    op.create_table(
        "hosting_ranges",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("range_start", sa.String(length=32), nullable=False),
        sa.Column("range_end", sa.String(length=32), nullable=False),
        sa.Column("asn", sa.Integer(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("as_name", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["hosting_datasets.id"],
            name=op.f("fk_hosting_ranges_dataset_id_hosting_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dataset_id", "range_start", name=op.f("pk_hosting_ranges")),
    )
    op.create_table(
        "provider_directory",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("organisation", sa.Text(), nullable=False),
        sa.Column("abuse_email", sa.Text(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("webhook", sa.String(length=128), nullable=True),
        sa.Column("send_window", sa.Text(), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("recheck_hours", sa.Float(), nullable=True),
        sa.Column("cdn", sa.Boolean(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_directory")),
        sa.UniqueConstraint("key", "role", name="uq_provider_directory_key_role"),
    )
    op.create_index(op.f("ix_provider_directory_key"), "provider_directory", ["key"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_provider_directory_key"), table_name="provider_directory")
    op.drop_table("provider_directory")
    op.drop_table("hosting_ranges")
    op.drop_table("hosting_datasets")
