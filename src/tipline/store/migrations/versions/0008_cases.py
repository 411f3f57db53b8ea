"""The removal loop (docs/removal.md): locations, cases and their transitions, notices (with
the cases they group), re-checks and the intake of confirmed URLs.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 02:40:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("contact_key", sa.String(length=300), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("organisation", sa.Text(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ladder_step", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("send_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_by", sa.String(length=200), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body_sha256", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("urls", sa.JSON(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=True),
        sa.Column("contact", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "channel IN ('email', 'webhook', 'manual')", name=op.f("ck_notices_channel")
        ),
        sa.CheckConstraint(
            "state IN ('queued', 'sending', 'sent', 'failed', 'manual_pending')",
            name=op.f("ck_notices_state"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
        sa.UniqueConstraint("serial", name=op.f("uq_notices_serial")),
    )
    op.create_index(op.f("ix_notices_contact_key"), "notices", ["contact_key"], unique=False)
    op.create_index(op.f("ix_notices_state"), "notices", ["state"], unique=False)
    op.create_table(
        "locations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url_sha256", sa.String(length=64), nullable=False),
        sa.Column("canonical_url", sa.Text(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("registrable_domain", sa.String(length=255), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=True),
        sa.Column("item_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_locations_item_id_items"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_locations_report_id_reports"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_locations")),
        sa.UniqueConstraint("url_sha256", name=op.f("uq_locations_url_sha256")),
    )
    op.create_index(op.f("ix_locations_host"), "locations", ["host"], unique=False)
    op.create_index(
        op.f("ix_locations_registrable_domain"), "locations", ["registrable_domain"], unique=False
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=False),
        sa.Column("open_location_id", sa.Integer(), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("state_before_hold", sa.String(length=20), nullable=True),
        sa.Column("ladder_step", sa.Integer(), nullable=False),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("notice_count", sa.Integer(), nullable=False),
        sa.Column("consecutive_misses", sa.Integer(), nullable=False),
        sa.Column("next_action", sa.String(length=20), nullable=True),
        sa.Column("next_action_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("hold_agency", sa.String(length=200), nullable=True),
        sa.Column("hold_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hold_by", sa.String(length=200), nullable=True),
        sa.Column("flag", sa.Text(), nullable=True),
        sa.Column("pending_notice", sa.JSON(), nullable=True),
        sa.Column("routing", sa.String(length=16), nullable=True),
        sa.Column("evidence_sha256", sa.String(length=64), nullable=True),
        sa.Column("attribution", sa.JSON(), nullable=True),
        sa.Column("provider_key", sa.String(length=300), nullable=True),
        sa.Column("provider_name", sa.Text(), nullable=True),
        sa.Column("asn", sa.BigInteger(), nullable=True),
        sa.Column("as_name", sa.Text(), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("item_id", sa.Integer(), nullable=True),
        sa.Column("report_id", sa.Integer(), nullable=True),
        sa.Column("grade", sa.JSON(), nullable=True),
        sa.Column("opened_by", sa.String(length=200), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_notice_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_notice_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reappeared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("watch_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('confirmed', 'held', 'evidence_captured', 'notified', 'escalated', "
            "'removed', 'moved', 'reappeared', 'closed')",
            name=op.f("ck_cases_state"),
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_cases_item_id_items"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["locations.id"],
            name=op.f("fk_cases_location_id_locations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_cases_report_id_reports"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        sa.UniqueConstraint("open_location_id", name=op.f("uq_cases_open_location_id")),
    )
    op.create_index("ix_cases_due", "cases", ["state", "next_action_at"], unique=False)
    op.create_index(op.f("ix_cases_hold_until"), "cases", ["hold_until"], unique=False)
    op.create_index(op.f("ix_cases_item_id"), "cases", ["item_id"], unique=False)
    op.create_index(op.f("ix_cases_location_id"), "cases", ["location_id"], unique=False)
    op.create_index(op.f("ix_cases_next_action_at"), "cases", ["next_action_at"], unique=False)
    op.create_index(op.f("ix_cases_provider_key"), "cases", ["provider_key"], unique=False)
    op.create_index(op.f("ix_cases_report_id"), "cases", ["report_id"], unique=False)
    op.create_table(
        "case_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=True),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_events_case_id_cases"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_events")),
    )
    op.create_index(op.f("ix_case_events_at"), "case_events", ["at"], unique=False)
    op.create_index("ix_case_events_case_at", "case_events", ["case_id", "at"], unique=False)
    op.create_table(
        "case_intake",
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_case_intake_case_id_cases"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_case_intake_item_id_items"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_case_intake_report_id_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("report_id", "item_id", name=op.f("pk_case_intake")),
    )
    op.create_table(
        "notice_cases",
        sa.Column("notice_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_notice_cases_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["notice_id"],
            ["notices.id"],
            name=op.f("fk_notice_cases_notice_id_notices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("notice_id", "case_id", name=op.f("pk_notice_cases")),
    )
    op.create_index(op.f("ix_notice_cases_case_id"), "notice_cases", ["case_id"], unique=False)
    op.create_table(
        "rechecks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("transient", sa.Boolean(), nullable=False),
        sa.Column("addresses", sa.JSON(), nullable=False),
        sa.Column("matched", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('online', 'miss', 'blocked')", name=op.f("ck_rechecks_outcome")
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_rechecks_case_id_cases"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rechecks")),
    )
    op.create_index("ix_rechecks_case_at", "rechecks", ["case_id", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_rechecks_case_at", table_name="rechecks")
    op.drop_table("rechecks")
    op.drop_index(op.f("ix_notice_cases_case_id"), table_name="notice_cases")
    op.drop_table("notice_cases")
    op.drop_table("case_intake")
    op.drop_index("ix_case_events_case_at", table_name="case_events")
    op.drop_index(op.f("ix_case_events_at"), table_name="case_events")
    op.drop_table("case_events")
    op.drop_index(op.f("ix_cases_report_id"), table_name="cases")
    op.drop_index(op.f("ix_cases_provider_key"), table_name="cases")
    op.drop_index(op.f("ix_cases_next_action_at"), table_name="cases")
    op.drop_index(op.f("ix_cases_location_id"), table_name="cases")
    op.drop_index(op.f("ix_cases_item_id"), table_name="cases")
    op.drop_index(op.f("ix_cases_hold_until"), table_name="cases")
    op.drop_index("ix_cases_due", table_name="cases")
    op.drop_table("cases")
    op.drop_index(op.f("ix_locations_registrable_domain"), table_name="locations")
    op.drop_index(op.f("ix_locations_host"), table_name="locations")
    op.drop_table("locations")
    op.drop_index(op.f("ix_notices_state"), table_name="notices")
    op.drop_index(op.f("ix_notices_contact_key"), table_name="notices")
    op.drop_table("notices")
