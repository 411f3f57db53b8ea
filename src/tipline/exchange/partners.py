"""Partner metadata of exchange bank entries, for the matches against them.

The fetcher stores each partner record's metadata with its bank entry (``meta.exchange``: the
exchange's name and API, the partner's record key, and what the partner said about the entry:
member, entry id, classification, list). :func:`annotate` copies it into the matches the
pipeline stores, so the match record, the review desk and the NCMEC-style report say which
list of which partner matched and how the partner classified it. Partner data is hostile
input: only scalar fields, bounded in number and length, are copied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tipline.record import Match
from tipline.store.tables import BankEntryRow

__all__ = ["MAX_FIELDS", "MAX_TEXT", "annotate", "partner_of", "partners_for"]

#: partner fields copied per match, and characters per text field
MAX_FIELDS = 16
MAX_TEXT = 200


def _scalar(value: Any) -> str | int | float | bool | None:
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        return value[:MAX_TEXT]
    return None


def partner_of(meta: Any) -> dict[str, Any] | None:
    """The partner summary of one bank entry's ``meta`` (None for a non-exchange entry)."""
    if not isinstance(meta, Mapping):
        return None
    ex = meta.get("exchange")
    if not isinstance(ex, Mapping) or not isinstance(ex.get("name"), str):
        return None
    out: dict[str, Any] = {
        "exchange": str(ex["name"])[:MAX_TEXT],
        "api": str(ex.get("api") or "")[:MAX_TEXT],
        "record": str(ex.get("key") or "")[:MAX_TEXT],
    }
    fields = ex.get("partner")
    if isinstance(fields, Mapping):
        for k, v in list(fields.items())[: MAX_FIELDS * 2]:
            if len(out) >= MAX_FIELDS + 3:
                break
            if not isinstance(k, str) or k in out:
                continue
            if isinstance(v, Mapping):  # a peer's nested "partner" object: its name
                v = v.get("name") or v.get("url")
            value = _scalar(v)
            if value is not None and value != "":
                out[k[:64]] = value
    return out


def partners_for(session: Session, entry_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Entry id -> partner summary, for the exchange entries among ``entry_ids``."""
    ids = sorted({int(i) for i in entry_ids})
    out: dict[int, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(BankEntryRow.id, BankEntryRow.meta).where(
                BankEntryRow.id.in_(ids[start : start + 500]),
                BankEntryRow.source.like("exchange:%"),
            )
        )
        for entry_id, meta in rows:
            summary = partner_of(meta)
            if summary is not None:
                out[int(entry_id)] = summary
    return out


def annotate(session: Session, matches: Sequence[Match]) -> None:
    """Set ``partner`` on every match against an exchange bank's entry (one query)."""
    if not matches:
        return
    found = partners_for(session, (m.entry_id for m in matches))
    for m in matches:
        summary = found.get(m.entry_id)
        if summary is not None:
            m.partner = summary
