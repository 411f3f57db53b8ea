"""Removal-loop tables (docs/removal.md): locations, cases and their transitions, notices and
re-checks.

* ``locations``: a reported URL in canonical form (unique by the SHA-256 of the canonical URL,
  so a long URL never hits an index size limit).
* ``cases``: one per location while it is not closed (``open_location_id`` is the location's
  id while the case is open, NULL once closed: a unique column that allows any number of
  NULLs, on SQLite and PostgreSQL alike). Every timestamp the statistics need is a column.
  ``version`` goes up on every change, so a worker that read a case commits its result only
  if nobody changed it meanwhile.
* ``case_events``: every state transition (also written to the audit chain).
* ``notices``: one per abuse contact and round, grouping its cases (``notice_cases``); the
  serial (``TLN-2026-000123``) is stable and the e-mail Message-ID is derived from it.
* ``rechecks``: every re-check's outcome.
* ``case_intake``: which confirmed (report, item, URL) rows the scheduler has looked at, and
  what came of it (a case, an existing case, or why the URL could not be a location).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base
from tipline.store.tables import UTCDateTime, utcnow

__all__ = [
    "CASE_STATES",
    "NOTICE_CHANNELS",
    "NOTICE_STATES",
    "RECHECK_OUTCOMES",
    "CaseEvent",
    "CaseIntake",
    "CaseRow",
    "CaseState",
    "LocationRow",
    "NoticeCase",
    "NoticeRow",
    "RecheckRow",
]

#: A case's state (docs/removal.md, "States"), defined once: the tuple is derived from it.
CaseState = Literal[
    "confirmed",
    "held",
    "evidence_captured",
    "notified",
    "escalated",
    "removed",
    "moved",
    "reappeared",
    "closed",
]
CASE_STATES: tuple[CaseState, ...] = get_args(CaseState)
NOTICE_STATES = ("queued", "sending", "sent", "failed", "manual_pending")
NOTICE_CHANNELS = ("email", "webhook", "manual")
RECHECK_OUTCOMES = ("online", "miss", "blocked")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class LocationRow(Base):
    """A URL in canonical form (:func:`tipline.removal.locations.parse_location`)."""

    __tablename__ = "locations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: SHA-256 (hex) of ``canonical_url``: the uniqueness key
    url_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    canonical_url: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(255), index=True)
    registrable_domain: Mapped[str] = mapped_column(String(255), index=True)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: the first report and item it came with
    report_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id", ondelete="SET NULL"))
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="SET NULL"))


class CaseRow(Base):
    """A removal case: one location on its way from confirmed to removed (docs/removal.md)."""

    __tablename__ = "cases"
    __table_args__ = (
        CheckConstraint(_in("state", CASE_STATES), name="state"),
        # the scheduler's query: due cases by state and time
        Index("ix_cases_due", "state", "next_action_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    location_id: Mapped[int] = mapped_column(
        ForeignKey("locations.id", ondelete="CASCADE"), index=True
    )
    #: ``location_id`` while the case is not closed, else NULL: one open case per location
    open_location_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), default="confirmed")
    #: the state a hold interrupted (restored on release)
    state_before_hold: Mapped[str | None] = mapped_column(String(20))
    #: index into the escalation ladder (0: the first step, the host)
    ladder_step: Mapped[int] = mapped_column(Integer, default=0)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    notice_count: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_misses: Mapped[int] = mapped_column(Integer, default=0)
    #: what the scheduler does next: "prepare" (attribute + evidence), "notice", "recheck",
    #: "watch" (after removal), "manual" (an analyst must act), None (nothing)
    next_action: Mapped[str | None] = mapped_column(String(20))
    next_action_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    hold_agency: Mapped[str | None] = mapped_column(String(200))
    hold_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    hold_by: Mapped[str | None] = mapped_column(String(200))
    #: why an analyst must act (no contact, attribution failed, moved, ...); None: nothing
    flag: Mapped[str | None] = mapped_column(Text)
    #: the notice round decided for this case, waiting to be grouped per contact
    pending_notice: Mapped[Any | None] = mapped_column(JSON)
    #: "in_country", "abroad" or "unknown" (no hosting country)
    routing: Mapped[str | None] = mapped_column(String(16))
    evidence_sha256: Mapped[str | None] = mapped_column(String(64))
    #: the last :meth:`Attribution.to_json` (with the data sets and versions that answered)
    attribution: Mapped[Any | None] = mapped_column(JSON)
    provider_key: Mapped[str | None] = mapped_column(String(300), index=True)
    provider_name: Mapped[str | None] = mapped_column(Text)
    asn: Mapped[int | None] = mapped_column(BigInteger)
    as_name: Mapped[str | None] = mapped_column(Text)
    country: Mapped[str | None] = mapped_column(String(2))
    item_id: Mapped[int | None] = mapped_column(
        ForeignKey("items.id", ondelete="SET NULL"), index=True
    )
    report_id: Mapped[int | None] = mapped_column(
        ForeignKey("reports.id", ondelete="SET NULL"), index=True
    )
    #: the item's final grade (taxonomy values and label) when the case was opened
    grade: Mapped[Any | None] = mapped_column(JSON)
    opened_by: Mapped[str] = mapped_column(String(200), default="system")
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime())
    confirmed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    first_notice_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_notice_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    moved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reappeared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: after a removal: watch for the content coming back until then
    watch_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    close_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CaseEvent(Base):
    """One transition of a case (``from_state`` None: the case was opened)."""

    __tablename__ = "case_events"
    __table_args__ = (Index("ix_case_events_case_at", "case_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    details: Mapped[Any] = mapped_column(JSON, default=dict)


class NoticeRow(Base):
    """One notice to one contact, grouping the URLs of its cases (``notice_cases``)."""

    __tablename__ = "notices"
    __table_args__ = (
        CheckConstraint(_in("state", NOTICE_STATES), name="state"),
        CheckConstraint(_in("channel", NOTICE_CHANNELS), name="channel"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: ``TLN-2026-000123``: what the recipient quotes; the Message-ID derives from it
    serial: Mapped[str] = mapped_column(String(40), unique=True)
    contact_key: Mapped[str] = mapped_column(String(300), index=True)
    role: Mapped[str] = mapped_column(String(16))
    organisation: Mapped[str] = mapped_column(Text, default="")
    channel: Mapped[str] = mapped_column(String(16))
    #: the e-mail address, or the webhook's name; None for manual notices
    address: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(16), default="en")
    #: "notice" (to a host, owner, registrar, upstream, police) or "referral" (to a partner
    #: hotline, with an ICCAM-shaped record)
    kind: Mapped[str] = mapped_column(String(16), default="notice")
    ladder_step: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: not before this (the contact's send window; a hold on one of its cases)
    send_after: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_by: Mapped[str | None] = mapped_column(String(200))
    message_id: Mapped[str | None] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(Text)
    body_sha256: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    #: the canonical URLs it names, in order (also in notice_cases)
    urls: Mapped[Any] = mapped_column(JSON, default=list)
    #: the export record(s) a referral carries
    record: Mapped[Any | None] = mapped_column(JSON)
    #: the contact as it was when the notice was queued (``ProviderContact.to_json()``:
    #: organisation, address, channel, send window, language); None: no contact known
    contact: Mapped[Any | None] = mapped_column(JSON)


class NoticeCase(Base):
    """A case (and its URL) named in a notice."""

    __tablename__ = "notice_cases"

    notice_id: Mapped[int] = mapped_column(
        ForeignKey("notices.id", ondelete="CASCADE"), primary_key=True
    )
    case_id: Mapped[int] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    url: Mapped[str] = mapped_column(Text)


class RecheckRow(Base):
    """One re-check of a case's location against its evidence."""

    __tablename__ = "rechecks"
    __table_args__ = (
        CheckConstraint(_in("outcome", RECHECK_OUTCOMES), name="outcome"),
        Index("ix_rechecks_case_at", "case_id", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    outcome: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    transient: Mapped[bool] = mapped_column(Boolean, default=False)
    addresses: Mapped[Any] = mapped_column(JSON, default=list)
    #: SHA-256 of the evidence media still served
    matched: Mapped[Any] = mapped_column(JSON, default=list)


class CaseIntake(Base):
    """A confirmed (report, item) pair with a URL that the scheduler has looked at."""

    __tablename__ = "case_intake"

    report_id: Mapped[int] = mapped_column(
        ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    url: Mapped[str] = mapped_column(Text)
    #: the case the URL went to (new or already open); None when it could not be one
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
