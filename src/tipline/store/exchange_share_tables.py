"""Banks a Tipline instance shares with its peers (docs/exchanges.md, "Tipline peers").

* ``exchange_shares``: bank X is shared with peer P (an account, usually of role ``partner``,
  whose API tokens read the feed); the HMAC key both sides sign feed pages with (sealed with
  the media key); ``last_seq``, the share's change sequence.
* ``exchange_share_entries``: what the feed has published of each bank entry, with the change
  sequence number of its last change. The feed reconciles the bank against it before answering
  (new entry, changed metadata, disabled, deleted: a new sequence number), so the sequence
  only grows and a cursor never goes backwards, whoever changed the bank and how.
* ``exchange_share_opinions``: a peer's feedback on what we shared (once per peer, entry).
* ``exchange_share_submissions``: records a peer pushed to us (when its share accepts them),
  keyed by the peer's key, and the entry each became in the share's inbound bank.

The other direction, our banks pushed to exchanges that take submissions (a Tipline peer,
StopNCII's SubmitHashes; docs/exchanges.md, "Pushing"):

* ``exchange_pushes``: bank B is pushed to exchange X (once, or following: every change of B
  is pushed by a chain of ``exchange_push`` jobs), the chain's sequence, who runs it now, and
  how the last push went (errors, failures in a row, records left).
* ``exchange_push_entries``: what was pushed of each entry (its state, a digest of what was
  sent), so each (entry, state) goes out once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base


class ExchangeShareRow(Base):
    """A bank shared with a peer."""

    __tablename__ = "exchange_shares"
    __table_args__ = (UniqueConstraint("bank_id", "peer", name="uq_exchange_shares_bank_peer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"), index=True)
    #: the peer's account (its username): its tokens with exchange:read read this share
    peer: Mapped[str] = mapped_column(String(200), index=True)
    #: the HMAC-SHA256 key pages are signed with, sealed with the media key
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    #: the highest change sequence number given out
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    #: when the peer last read a page (epoch seconds)
    last_read_at: Mapped[float | None] = mapped_column(Float)
    #: the bank the peer's pushed records land in (None: the peer may not push)
    accept_into_bank_id: Mapped[int | None] = mapped_column(
        ForeignKey("banks.id", ondelete="SET NULL")
    )


class ExchangeShareEntryRow(Base):
    """What the share published of one bank entry (kept after the entry is deleted: its
    tombstone)."""

    __tablename__ = "exchange_share_entries"
    __table_args__ = (
        UniqueConstraint("share_id", "entry_id", name="uq_exchange_share_entries_entry"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    share_id: Mapped[int] = mapped_column(
        ForeignKey("exchange_shares.id", ondelete="CASCADE"), index=True
    )
    #: the bank entry's id (no foreign key: the row outlives the entry as a tombstone)
    entry_id: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    signal_type: Mapped[str] = mapped_column(String(32))
    signal: Mapped[str] = mapped_column(String(512))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: SHA-256 of what was published (label, metadata), to see a change
    digest: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[float] = mapped_column(Float)


class ExchangeShareSubmissionRow(Base):
    """A record the peer pushed to us (keyed by the peer's own key), and the entry it became."""

    __tablename__ = "exchange_share_submissions"
    __table_args__ = (
        UniqueConstraint("share_id", "key", name="uq_exchange_share_submissions_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    share_id: Mapped[int] = mapped_column(
        ForeignKey("exchange_shares.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(200))
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("bank_entries.id", ondelete="SET NULL"))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[float] = mapped_column(Float)


class ExchangeShareOpinionRow(Base):
    """A peer's opinion of an entry we shared (the latest one per peer and entry)."""

    __tablename__ = "exchange_share_opinions"
    __table_args__ = (
        UniqueConstraint("share_id", "entry_key", name="uq_exchange_share_opinions_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    share_id: Mapped[int] = mapped_column(
        ForeignKey("exchange_shares.id", ondelete="CASCADE"), index=True
    )
    entry_key: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    note: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[float] = mapped_column(Float)


class ExchangePushRow(Base):
    """A bank pushed to an exchange that takes submissions."""

    __tablename__ = "exchange_pushes"
    __table_args__ = (
        UniqueConstraint("exchange_id", "bank_id", name="uq_exchange_pushes_exchange_bank"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exchange_id: Mapped[int] = mapped_column(
        ForeignKey("exchanges.id", ondelete="CASCADE"), index=True
    )
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"), index=True)
    #: push every change of the bank by itself (a job chain), not only when asked
    follow: Mapped[bool] = mapped_column(Boolean, default=False)
    #: seconds between a following push's runs (a final grade runs one at once besides)
    interval_seconds: Mapped[int] = mapped_column(Integer, default=300)
    #: the job chain's sequence number: only the link carrying it is current
    run_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    #: who is pushing now and until when (a runner that died lets go when this passes)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_until: Mapped[float | None] = mapped_column(Float)
    #: no push before this (the partner's Retry-After, the backoff after a failure)
    retry_not_before: Mapped[float | None] = mapped_column(Float)
    last_run_ts: Mapped[float | None] = mapped_column(Float)
    last_success_ts: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    #: records (and withdrawals) still to push, as of the last run
    pending: Mapped[int] = mapped_column(Integer, default=0)


class ExchangePushEntryRow(Base):
    """What a push sent of one bank entry (kept after the entry is deleted: its withdrawal)."""

    __tablename__ = "exchange_push_entries"
    __table_args__ = (
        UniqueConstraint("push_id", "entry_id", name="uq_exchange_push_entries_entry"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    push_id: Mapped[int] = mapped_column(
        ForeignKey("exchange_pushes.id", ondelete="CASCADE"), index=True
    )
    #: the bank entry's id (no foreign key: the row outlives the entry)
    entry_id: Mapped[int] = mapped_column(Integer)
    signal_type: Mapped[str] = mapped_column(String(32))
    signal: Mapped[str] = mapped_column(String(512))
    #: ``sent``, ``withdrawn``, ``refused`` (the partner said no), ``skipped`` (not pushable)
    state: Mapped[str] = mapped_column(String(16))
    #: SHA-256 of what was pushed (record and enabled), to see a change
    digest: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    pushed_at: Mapped[float] = mapped_column(Float)


__all__ = [
    "ExchangePushEntryRow",
    "ExchangePushRow",
    "ExchangeShareEntryRow",
    "ExchangeShareOpinionRow",
    "ExchangeShareRow",
    "ExchangeShareSubmissionRow",
]
