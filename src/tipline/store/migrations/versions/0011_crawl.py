"""Crawls: a crawl per report or seed list, its frontier of pages and the media found.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 02:40:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "crawls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=True),
        sa.Column("seeds", sa.JSON(), nullable=False),
        sa.Column("budgets", sa.JSON(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("tor_username", sa.String(length=64), nullable=False),
        sa.Column("tor_password", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("runner", sa.String(length=128), nullable=True),
        sa.Column("runner_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_seconds", sa.Float(), nullable=False),
        sa.Column("pages_done", sa.Integer(), nullable=False),
        sa.Column("pages_failed", sa.Integer(), nullable=False),
        sa.Column("media_done", sa.Integer(), nullable=False),
        sa.Column("media_matched", sa.Integer(), nullable=False),
        sa.Column("media_flagged", sa.Integer(), nullable=False),
        sa.Column("media_kept", sa.Integer(), nullable=False),
        sa.Column("bytes_fetched", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_crawls_report_id_reports"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crawls")),
    )
    with op.batch_alter_table("crawls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crawls_report_id"), ["report_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_crawls_state"), ["state"], unique=False)

    op.create_table(
        "crawl_pages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("crawl_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("url_key", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("offsite", sa.Boolean(), nullable=False),
        sa.Column("barren", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("media_type", sa.String(length=128), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("links", sa.Integer(), nullable=False),
        sa.Column("media", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Boolean(), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("notes", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("evidence_sha256", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["crawl_id"],
            ["crawls.id"],
            name=op.f("fk_crawl_pages_crawl_id_crawls"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crawl_pages")),
        sa.UniqueConstraint("crawl_id", "url_key", name="uq_crawl_pages_crawl_url"),
    )
    with op.batch_alter_table("crawl_pages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_crawl_pages_crawl_state", ["crawl_id", "state", "depth", "id"], unique=False
        )

    op.create_table(
        "crawl_media",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("crawl_id", sa.Integer(), nullable=False),
        sa.Column("page_id", sa.Integer(), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("url_key", sa.String(length=64), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("media_type", sa.String(length=128), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("md5", sa.String(length=32), nullable=True),
        sa.Column("pdq", sa.String(length=64), nullable=True),
        sa.Column("pdq_quality", sa.Integer(), nullable=True),
        sa.Column("matched", sa.Boolean(), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("matches", sa.JSON(), nullable=True),
        sa.Column("flags", sa.JSON(), nullable=True),
        sa.Column("upload_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["crawl_id"],
            ["crawls.id"],
            name=op.f("fk_crawl_media_crawl_id_crawls"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["page_id"],
            ["crawl_pages.id"],
            name=op.f("fk_crawl_media_page_id_crawl_pages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crawl_media")),
        sa.UniqueConstraint("crawl_id", "url_key", name="uq_crawl_media_crawl_url"),
    )
    with op.batch_alter_table("crawl_media", schema=None) as batch_op:
        batch_op.create_index("ix_crawl_media_crawl_matched", ["crawl_id", "matched"], unique=False)
        batch_op.create_index(batch_op.f("ix_crawl_media_page_id"), ["page_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_crawl_media_sha256"), ["sha256"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("crawl_media", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_crawl_media_sha256"))
        batch_op.drop_index(batch_op.f("ix_crawl_media_page_id"))
        batch_op.drop_index("ix_crawl_media_crawl_matched")

    op.drop_table("crawl_media")
    with op.batch_alter_table("crawl_pages", schema=None) as batch_op:
        batch_op.drop_index("ix_crawl_pages_crawl_state")

    op.drop_table("crawl_pages")
    with op.batch_alter_table("crawls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_crawls_state"))
        batch_op.drop_index(batch_op.f("ix_crawls_report_id"))

    op.drop_table("crawls")
