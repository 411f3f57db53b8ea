"""Feedback to exchanges (docs/exchanges.md, "Feedback"): an analyst's final grade of content
that matched a partner's entry becomes one opinion per (exchange, partner entry, category),
sent by a durable job (``exchange_feedback``).

* ``exchange_feedback``: the opinion (the partner's record key, the entry's signal, positive or
  negative, the reasons), its delivery state (``queued``, ``sent``, ``failed``), the attempts
  made, the last error and when it was created and sent. The unique key makes the same opinion
  on the same entry one row, whichever grades and items lead to it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base

#: The states of a feedback row.
FEEDBACK_STATES = ("queued", "sent", "failed")


class ExchangeFeedbackRow(Base):
    """One opinion on one partner entry, and how its delivery stands."""

    __tablename__ = "exchange_feedback"
    __table_args__ = (
        UniqueConstraint(
            "exchange_id", "record_key", "category", name="uq_exchange_feedback_opinion"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exchange_id: Mapped[int] = mapped_column(
        ForeignKey("exchanges.id", ondelete="CASCADE"), index=True
    )
    #: the exchange's own key of the record (as fetched): what the partner is told about
    record_key: Mapped[str] = mapped_column(String(600))
    #: the bank entry the record became (no foreign key: the row outlives a removed entry)
    entry_id: Mapped[int | None] = mapped_column(Integer)
    signal_type: Mapped[str] = mapped_column(String(32))
    signal: Mapped[str] = mapped_column(String(512))
    #: ``positive`` (confirmed) or ``negative`` (not what the partner said)
    category: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: the record's partner metadata as fetched (NCMEC: member, entry id, fingerprint)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: the graded item whose grade made the opinion (the first one)
    item_id: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    sent_at: Mapped[float | None] = mapped_column(Float)


__all__ = ["FEEDBACK_STATES", "ExchangeFeedbackRow"]
