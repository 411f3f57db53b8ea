"""Hosting attribution tables (docs/hosting.md): imported IP-to-ASN data sets and the
operator's provider directory.

An IP range is stored with fixed-width keys: 32 lower-case hex digits of the address in IPv6
space, IPv4 mapped to ``::ffff:a.b.c.d``. Text comparison of such keys is address order on
every backend, so a lookup is one index probe on the primary key:
``WHERE dataset_id = :d AND range_start <= :ip ORDER BY range_start DESC LIMIT 1``, then a
check of ``range_end``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base
from tipline.store.tables import UTCDateTime, utcnow

__all__ = ["HostingDataset", "HostingRange", "ProviderEntry"]


class HostingDataset(Base):
    """One imported data set (by name); a re-import replaces its row and its ranges."""

    __tablename__ = "hosting_datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    #: "ip2asn" (ranges in hosting_ranges) or "mmdb" (a file under the data directory)
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[str] = mapped_column(String(64))
    row_count: Mapped[int] = mapped_column(Integer, default=0)
    #: mmdb: the copied file, relative to the data directory
    path: Mapped[str | None] = mapped_column(Text)
    source_sha256: Mapped[str] = mapped_column(String(64))
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class HostingRange(Base):
    """One address range of an ip2asn data set; ``asn`` 0 is "not routed"."""

    __tablename__ = "hosting_ranges"

    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("hosting_datasets.id", ondelete="CASCADE"), primary_key=True
    )
    range_start: Mapped[str] = mapped_column(String(32), primary_key=True)
    range_end: Mapped[str] = mapped_column(String(32))
    asn: Mapped[int] = mapped_column(Integer)
    country: Mapped[str | None] = mapped_column(String(2))
    as_name: Mapped[str | None] = mapped_column(Text)


class ProviderEntry(Base):
    """One entry of the operator-kept provider directory, keyed by ``asn:N``,
    ``domain:example.org`` or ``country:DE``, one row per role."""

    __tablename__ = "provider_directory"
    __table_args__ = (UniqueConstraint("key", "role", name="uq_provider_directory_key_role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), index=True)
    role: Mapped[str] = mapped_column(String(16))
    organisation: Mapped[str] = mapped_column(Text)
    abuse_email: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(16))
    webhook: Mapped[str | None] = mapped_column(String(128))
    send_window: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(16), default="en")
    recheck_hours: Mapped[float | None] = mapped_column(Float)
    cdn: Mapped[bool] = mapped_column(Boolean, default=False)
    #: where the entry came from ("directory.toml entry 3", "providers.csv line 7")
    source: Mapped[str] = mapped_column(Text, default="")
