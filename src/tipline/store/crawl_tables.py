"""Crawl tables (docs/crawl.md): a crawl per report or seed list, its frontier of pages and the
media found on them.

The frontier is itself the crawl's durable queue: a page row goes ``queued -> fetching ->
done | failed`` and a page's result (its row, its media rows and its child pages) is committed
in one transaction, so a crawl killed at any moment resumes with nothing lost and no committed
page fetched again. Pages and media are unique per crawl by ``url_key``, the SHA-256 of the
canonical URL (URLs may be longer than an index allows).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base
from tipline.store.tables import UTCDateTime, utcnow

__all__ = ["CrawlMedia", "CrawlPage", "CrawlRow"]


class CrawlRow(Base):
    """One crawl: its seeds, budgets and policy, where it stands and why it stopped."""

    __tablename__ = "crawls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: the report whose URLs seeded it (None: a seed list from the CLI)
    report_id: Mapped[int | None] = mapped_column(
        ForeignKey("reports.id", ondelete="SET NULL"), index=True
    )
    seeds: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: max_pages, max_bytes, max_depth, max_seconds, max_media
    budgets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: scope (allow/deny lists, registrable domains), Arachnid's K, politeness
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: queued | running | waiting | done | stopped | failed
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    stop_reason: Mapped[str | None] = mapped_column(Text)
    #: SOCKS credentials of this crawl's Tor circuits (Tor isolates by SOCKS auth)
    tor_username: Mapped[str] = mapped_column(String(64), default="")
    tor_password: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: the runner working on it and when it last said so (a stale one is taken over)
    runner: Mapped[str | None] = mapped_column(String(128))
    runner_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: seconds spent running, over every resumption (the wall-time budget counts these)
    run_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    pages_done: Mapped[int] = mapped_column(Integer, default=0)
    pages_failed: Mapped[int] = mapped_column(Integer, default=0)
    media_done: Mapped[int] = mapped_column(Integer, default=0)
    media_matched: Mapped[int] = mapped_column(Integer, default=0)
    media_flagged: Mapped[int] = mapped_column(Integer, default=0)
    media_kept: Mapped[int] = mapped_column(Integer, default=0)
    bytes_fetched: Mapped[int] = mapped_column(BigInteger, default=0)


class CrawlPage(Base):
    """One frontier entry: a page to fetch (or fetched), unique per crawl by canonical URL."""

    __tablename__ = "crawl_pages"
    __table_args__ = (
        UniqueConstraint("crawl_id", "url_key", name="uq_crawl_pages_crawl_url"),
        Index("ix_crawl_pages_crawl_state", "crawl_id", "state", "depth", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    crawl_id: Mapped[int] = mapped_column(ForeignKey("crawls.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    url_key: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255), default="")
    depth: Mapped[int] = mapped_column(Integer, default=0)
    parent_id: Mapped[int | None] = mapped_column(Integer)
    #: how it was found: seed, link, next (pagination), thumb (a thumbnail's link), ...
    via: Mapped[str] = mapped_column(String(16), default="link")
    #: outside the crawl's scope, followed one hop (a media host): its links are not followed
    offsite: Mapped[bool] = mapped_column(Boolean, default=False)
    #: pages in a row with nothing found on the branch above it (Arachnid's rule)
    barren: Mapped[int] = mapped_column(Integer, default=0)
    #: queued | fetching | done | failed | waiting
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    http_status: Mapped[int | None] = mapped_column(Integer)
    media_type: Mapped[str | None] = mapped_column(String(128))
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    links: Mapped[int] = mapped_column(Integer, default=0)
    media: Mapped[int] = mapped_column(Integer, default=0)
    matched: Mapped[bool] = mapped_column(Boolean, default=False)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    #: keyword hits, document findings, links dropped over a cap, ...
    notes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    #: the sealed evidence capture (WARC-exportable) of a page where something matched
    evidence_sha256: Mapped[str | None] = mapped_column(String(64))


class CrawlMedia(Base):
    """One media file found by a crawl: its hashes and match result. Its bytes are kept (as an
    upload of the crawl's report, through the pipeline) only when it matched or was flagged."""

    __tablename__ = "crawl_media"
    __table_args__ = (
        UniqueConstraint("crawl_id", "url_key", name="uq_crawl_media_crawl_url"),
        Index("ix_crawl_media_crawl_matched", "crawl_id", "matched"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    crawl_id: Mapped[int] = mapped_column(ForeignKey("crawls.id", ondelete="CASCADE"))
    page_id: Mapped[int | None] = mapped_column(
        ForeignKey("crawl_pages.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    url_key: Mapped[str] = mapped_column(String(64))
    #: img, full (a thumbnail's full size), srcset, og, video, source, link, archive, model
    via: Mapped[str] = mapped_column(String(16), default="img")
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    http_status: Mapped[int | None] = mapped_column(Integer)
    media_type: Mapped[str | None] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    md5: Mapped[str | None] = mapped_column(String(32))
    pdq: Mapped[str | None] = mapped_column(String(64))
    pdq_quality: Mapped[int | None] = mapped_column(Integer)
    matched: Mapped[bool] = mapped_column(Boolean, default=False)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    matches: Mapped[list[Any] | None] = mapped_column(JSON)
    #: why it was flagged: ai evidence, keyword hits, model or document findings
    flags: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: the upload its bytes became (matched or flagged media of a crawl with a report)
    upload_id: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
