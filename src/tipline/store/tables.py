"""Every table of the hotline service, on the shared :class:`~tipline.store.base.Base`.

The schema is created and changed only by the Alembic migrations in
``tipline/store/migrations`` (``tipline db upgrade``); it is identical on SQLite and PostgreSQL.

Times are timezone-aware UTC datetimes (:class:`UTCDateTime`) except in the bank tables, which
keep the float epoch seconds of :class:`tipline.banks.bank.Bank` / ``Entry``. Columns that hold
personal data are marked in their comments ("personal data") so retention and export code can
find them.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from tipline.store.base import Base

REPORT_SOURCES = ("public_form", "partner_api", "cli")
REPORT_STATUSES = ("received", "processing", "triaged", "in_review", "closed", "failed")
ITEM_STATUSES = (
    "new",
    "hashed",
    "matched",
    "in_review",
    "escalated",
    "confirmed",
    "auto_confirmed",
    "dismissed",
    # identical to material graded not illegal (an exact match in an auto-confirm ignore bank)
    "auto_dismissed",
    "failed",
    # an uploaded archive: its members are items of their own; the archive is never reviewed
    "container",
)
CLUSTER_STATUSES = ("open", "in_review", "escalated", "closed")
JOB_STATUSES = ("queued", "running", "done", "failed", "dead")
ROLES = ("admin", "senior_analyst", "analyst", "auditor", "partner")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored as UTC and always read back timezone-aware (UTC) on both backends.

    SQLite has no timezone type, so naive values are refused on the way in (they are a bug)
    and UTC is attached on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column: use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# -- reports and items --------------------------------------------------------------------------


class Report(Base):
    """One report as received (public form, partner API or CLI)."""

    __tablename__ = "reports"
    __table_args__ = (
        CheckConstraint(_in("source", REPORT_SOURCES), name="source"),
        # The same partner token never creates two reports for one idempotency key.
        UniqueConstraint("partner_token_id", "idempotency_key", name="uq_reports_partner_idem"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Human reference such as ``TL-2026-000123``: what the reporter and analysts quote.
    reference: Mapped[str] = mapped_column(String(32), unique=True)
    source: Mapped[str] = mapped_column(String(16))
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    #: How to reach the reporter (personal data; optional).
    contact: Mapped[str | None] = mapped_column(Text, comment="personal data")
    urls: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="received", index=True)
    partner_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="SET NULL")
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    priority: Mapped[float | None] = mapped_column(Float, index=True)
    priority_reason: Mapped[str] = mapped_column(Text, default="")


class Item(Base):
    """One distinct piece of media (by SHA-256), however many reports it came in."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    md5: Mapped[str | None] = mapped_column(String(32), index=True)
    sha1: Mapped[str | None] = mapped_column(String(40))
    pdq: Mapped[str | None] = mapped_column(String(64), index=True)
    pdq_quality: Mapped[int | None] = mapped_column(Integer)
    vpdq: Mapped[Any | None] = mapped_column(JSON)
    media_type: Mapped[str] = mapped_column(String(64), default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    provenance: Mapped[Any | None] = mapped_column(JSON)
    ai_evidence: Mapped[Any | None] = mapped_column(JSON)
    cluster_id: Mapped[int | None] = mapped_column(
        ForeignKey("clusters.id", ondelete="SET NULL"), index=True
    )
    #: Order of cluster assignment (1, 2, 3...; assignments are serialised): workers keep an
    #: in-memory index of clustered items and read only what was assigned since they last looked.
    clustered_seq: Mapped[int | None] = mapped_column(BigInteger, index=True)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: Pointer into the media store (None once the bytes are purged or never kept).
    media_ref: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="new", index=True)
    priority: Mapped[float | None] = mapped_column(Float, index=True)
    priority_reason: Mapped[str] = mapped_column(Text, default="")
    #: Bank matches: a list of ``Match.to_json()`` dicts.
    matches: Mapped[Any | None] = mapped_column(JSON)
    #: Per-item processing errors (list of str).
    errors: Mapped[Any | None] = mapped_column(JSON)
    #: e.g. a name that disguises the content ("name says image/jpeg, content is text/plain")
    warnings: Mapped[Any | None] = mapped_column(JSON)
    keyword_hits: Mapped[Any | None] = mapped_column(JSON)
    #: The final grade (taxonomy values) once analysts reached consensus or a senior decided.
    grade: Mapped[Any | None] = mapped_column(JSON)
    graded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    #: When the final grade's hashes reached the hotline's banks (None: not yet).
    banked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Upload(Base):
    """Bytes received with a report (form/API upload, or fetched from a reported URL), kept
    until the pipeline has moved them into the media store (then ``data`` is NULL). Written in
    the same transaction as the report and its first job, so an accepted upload is never lost.
    """

    __tablename__ = "uploads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255), default="")
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: The reported URL these bytes were fetched from (NULL for form/API uploads).
    source_url: Mapped[str | None] = mapped_column(Text)


class ReportItem(Base):
    """Which items a report brought in, and from where."""

    __tablename__ = "report_items"

    report_id: Mapped[int] = mapped_column(
        ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    source_url: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Cluster(Base):
    """A group of near-duplicate items, reviewed as one."""

    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The item shown for the cluster (an ``items.id``; no foreign key: items point here too).
    representative_item_id: Mapped[int | None] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer, default=1)
    priority: Mapped[float | None] = mapped_column(Float, index=True)
    priority_reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)


# -- banks --------------------------------------------------------------------------------------


class BankRow(Base):
    """A bank (see :class:`tipline.banks.bank.Bank`)."""

    __tablename__ = "banks"
    __table_args__ = (
        CheckConstraint("role IN ('alert', 'ignore')", name="role"),
        CheckConstraint("pdq_threshold BETWEEN 0 AND 255", name="pdq_threshold"),
        CheckConstraint("enabled_ratio BETWEEN 0 AND 1", name="enabled_ratio"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="alert")
    pdq_threshold: Mapped[int] = mapped_column(Integer, default=31)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    #: An alert bank whose matches are actioned without a human view.
    auto_confirm: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: Independent agreeing grades an item matching this bank needs (None: the service default).
    consensus_required: Mapped[int | None] = mapped_column(Integer)
    #: HMA's ``matching_enabled_ratio`` while the bank is enabled: the share of lookups (a
    #: coin flip seeded by the query's ``seed``) that see this bank; 1.0 = every lookup.
    enabled_ratio: Mapped[float] = mapped_column(Float, default=1.0, server_default="1.0")


def signal_key(signal: str) -> int:
    """The signed 64-bit lookup key of a (normalised) signal: the first 8 bytes of its
    BLAKE2b digest. Collisions only cost a row read: lookups compare the signal too. Never
    change it without a migration that rewrites ``bank_entries.signal_key``."""
    return int.from_bytes(
        hashlib.blake2b(signal.encode(), digest_size=8).digest(), "big", signed=True
    )


def _signal_key_default(context: Any) -> int | None:
    signal = context.get_current_parameters().get("signal")
    return None if signal is None else signal_key(signal)


class BankEntryRow(Base):
    """One hash in a bank (one piece of HMA bank content). Ids are unique across banks and
    never reused (AUTOINCREMENT on SQLite, a sequence on PostgreSQL), like HMA's
    ``bank_content_id``. A bank may hold the same signal in several entries (HMA creates a new
    content item each time content is added); bulk imports dedupe by looking it up."""

    __tablename__ = "bank_entries"
    __table_args__ = (
        # Serves lookups by (signal_type, signal) and the per-bank dedupe of imports, through
        # signal_key (8 bytes a row where the hex signal was 40-70: a random-order index a
        # million-entry fetch keeps in its page cache; migration 0013).
        Index("ix_bank_entries_signal_key", "signal_key"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"), index=True)
    signal_type: Mapped[str] = mapped_column(String(32))
    signal: Mapped[str] = mapped_column(String(512))
    label: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(Text, default="")
    note: Mapped[str] = mapped_column(Text, default="")
    added_at: Mapped[float] = mapped_column(Float)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Space-separated tags.
    tags: Mapped[str] = mapped_column(Text, default="")
    #: HMA's future ``disable_until_ts``: disabled until this epoch time, then enabled again
    #: by itself (None: no such time; ``enabled`` alone decides).
    disabled_until: Mapped[float | None] = mapped_column(Float)
    #: HMA's user metadata of the content (``content_id``, ``content_uri``, ``json``).
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: :func:`signal_key` of ``signal``: what lookups find an entry by (then ``signal_type``
    #: and ``signal`` compared in full). Filled by the ORM / Core default on insert; code that
    #: writes ``signal`` below them (the exchange fetcher) or updates it sets it too.
    signal_key: Mapped[int | None] = mapped_column(BigInteger, default=_signal_key_default)


class SignalTypeSettingRow(Base):
    """A signal type's ``enabled_ratio`` set through HMA's ``PUT /c/signal_type/<name>`` (no
    row: 1.0). A type at 0 is not hashed or looked up by the HMA routes."""

    __tablename__ = "signal_type_settings"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    enabled_ratio: Mapped[float] = mapped_column(Float, default=1.0)


# -- jobs ---------------------------------------------------------------------------------------


class Job(Base):
    """A unit of background work (see :mod:`tipline.store.jobs`)."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        # What lease() scans: runnable jobs of some kinds, oldest due first.
        Index("ix_jobs_lease", "status", "kind", "run_after"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[Any] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    #: Enqueueing twice with the same key creates one job.
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True)


# -- users, tokens, sessions, audit -------------------------------------------------------------


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(255), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SessionRow(Base):
    """A signed-in browser session. ``id`` is the hash of the cookie value, never the value."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    csrf_token: Mapped[str] = mapped_column(String(128))


class AuditEvent(Base):
    """One entry of the append-only, hash-chained audit log."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target_type: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(200))
    ip: Mapped[str | None] = mapped_column(String(64), comment="personal data")
    details: Mapped[Any] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


# -- review desk ------------------------------------------------------------------------------

GRADE_KINDS = ("analyst", "senior")


class ClusterClaim(Base):
    """Who is reviewing a cluster now: one holder per cluster, so two analysts never hold the
    same job. A claim lapses at ``expires_at`` (the holder renews it while working)."""

    __tablename__ = "cluster_claims"

    cluster_id: Mapped[int] = mapped_column(
        ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Grade(Base):
    """One analyst's grade of one item. ``decision`` is the canonical text of the taxonomy's
    consensus fields: grades agree when their decisions are equal."""

    __tablename__ = "grades"
    __table_args__ = (
        CheckConstraint(_in("kind", GRADE_KINDS), name="kind"),
        # An analyst grades an item once (independence); a senior decides it once.
        UniqueConstraint("item_id", "user_id", "kind", name="uq_grades_item_user_kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    cluster_id: Mapped[int | None] = mapped_column(Integer, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="analyst")
    values: Mapped[Any] = mapped_column(JSON, default=dict)
    decision: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class ExposureInterval(Base):
    """A stretch of time an analyst spent on pages that show media (heartbeats extend it)."""

    __tablename__ = "exposure_intervals"
    __table_args__ = (Index("ix_exposure_user_start", "user_id", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    cluster_id: Mapped[int | None] = mapped_column(Integer)


class UserPreference(Base):
    """A user's remembered settings (viewing filter strengths)."""

    __tablename__ = "user_preferences"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    prefs: Mapped[Any] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Webhook(Base):
    """An HTTPS endpoint told about events (match, grade, export) with signed payloads."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    url: Mapped[str] = mapped_column(Text)
    #: The HMAC-SHA256 signing secret (shown once at creation).
    secret: Mapped[str] = mapped_column(String(128))
    events: Mapped[list[Any]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_status: Mapped[str | None] = mapped_column(String(200))
    last_delivery_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# -- exchanges (docs/exchanges.md) ------------------------------------------------------------


class ExchangeRow(Base):
    """A configured hash exchange: where a bank's hashes are fetched from (HMA's ``exchange``).
    Times are float epoch seconds, as in the bank tables."""

    __tablename__ = "exchanges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: HMA's exchange name (``^[A-Z_][A-Z0-9_]*$``); by default also its bank's name
    name: Mapped[str] = mapped_column(String(64), unique=True)
    #: the exchange type (``local_file``, ``http_list``, ...)
    api: Mapped[str] = mapped_column(String(32))
    #: one exchange per bank: the bank its records land in
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"), unique=True)
    #: the type's own settings (a path, a URL, a format), never secrets
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: AES-256-GCM sealed JSON (the media store's key), never shown
    credentials: Mapped[bytes | None] = mapped_column(LargeBinary)
    fetching_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: seconds between the end of one fetch and the start of the next
    interval_seconds: Mapped[int] = mapped_column(Integer, default=3600)
    created_at: Mapped[float] = mapped_column(Float)


class ExchangeApiConfigRow(Base):
    """Credentials of an exchange type as a whole (HMA's ``exchange_api_config``): used by its
    exchanges that have none of their own. Sealed like :attr:`ExchangeRow.credentials`."""

    __tablename__ = "exchange_api_configs"

    api: Mapped[str] = mapped_column(String(32), primary_key=True)
    credentials: Mapped[bytes | None] = mapped_column(LargeBinary)


class ExchangeFetchStatusRow(Base):
    """Where an exchange's fetching stands: its checkpoint (written in the same transaction as
    the records it covers) and HMA's fetch status fields."""

    __tablename__ = "exchange_fetch_status"

    exchange_id: Mapped[int] = mapped_column(
        ForeignKey("exchanges.id", ondelete="CASCADE"), primary_key=True
    )
    #: the type's checkpoint (JSON); None: fetch from scratch
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: the checkpoint's progress time (epoch seconds); never goes backwards
    checkpoint_ts: Mapped[int | None] = mapped_column(BigInteger)
    up_to_date: Mapped[bool] = mapped_column(Boolean, default=False)
    #: bumped by every commit: a second fetcher of the same exchange sees it and stops
    version: Mapped[int] = mapped_column(Integer, default=0)
    #: a fetch from scratch starts a new generation; when it is complete, records of older
    #: generations not seen again are tombstoned
    generation: Mapped[int] = mapped_column(Integer, default=0)
    snapshot_open: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the scheduled fetch job's sequence number (its dedupe key)
    run_seq: Mapped[int] = mapped_column(Integer, default=0)
    running_fetch_start_ts: Mapped[float | None] = mapped_column(Float)
    last_fetch_complete_ts: Mapped[float | None] = mapped_column(Float)
    last_fetch_succeeded: Mapped[bool | None] = mapped_column(Boolean)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: live (not tombstoned) records
    fetched_items: Mapped[int] = mapped_column(Integer, default=0)
    #: counters (``invalid``, ``unknown_signal_type``, ``tombstoned``, ...) and the latest
    #: problems (``problems``: ``[{"kind", "where", "reason"}]``, the last few)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ExchangeRecordRow(Base):
    """One record fetched from an exchange, by the exchange's own key, and the bank entry it
    became: a record fetched twice is one entry, a tombstone disables it."""

    __tablename__ = "exchange_records"
    __table_args__ = (
        UniqueConstraint("exchange_id", "key", name="uq_exchange_records_key"),
        Index("ix_exchange_records_generation", "exchange_id", "generation"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exchange_id: Mapped[int] = mapped_column(ForeignKey("exchanges.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(600))
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("bank_entries.id", ondelete="SET NULL"))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    #: SHA-256 of what the entry holds (type, signal, label, metadata): unchanged records
    #: are not rewritten
    digest: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[float] = mapped_column(Float)


__all__ = [
    "ApiToken",
    "AuditEvent",
    "BankEntryRow",
    "BankRow",
    "Cluster",
    "ClusterClaim",
    "ExchangeApiConfigRow",
    "ExchangeFetchStatusRow",
    "ExchangeRecordRow",
    "ExchangeRow",
    "ExposureInterval",
    "Grade",
    "Item",
    "Job",
    "Report",
    "ReportItem",
    "SessionRow",
    "UTCDateTime",
    "Upload",
    "User",
    "UserPreference",
    "Webhook",
    "signal_key",
    "utcnow",
]

# Tables of other concerns live in their own modules on the same Base; importing them here
# registers them wherever the schema is needed (migrations, tests comparing it).
from tipline.store import (  # noqa: E402, F401
    case_tables,
    crawl_tables,
    exchange_feedback_tables,
    exchange_share_tables,
    hosting_tables,
)
