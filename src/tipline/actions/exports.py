"""Exports of final-graded, actionable items: hash lists and the URL list.

An item is exported once analysts reached a final grade (``items.graded_at`` is set) and that
grade is actionable (``items.grade["actionable"]`` is true); ``since`` keeps only items graded
at or after a time (incremental exports). Formats (:data:`HASH_FORMATS`):

``te-csv``
    python-threatexchange ``dataset --csv`` (written by :func:`tipline.banks.formats.
    write_hash_list`): ``signal_type,signal_str,collab,category,tags``, one row per signal:
    ``md5`` and ``pdq`` (PDQ only when its quality is at least 50, the usable threshold, so a
    flat image's hash never ends up on a shared list). ``collab`` is the exporting hotline,
    ``category`` the grade label, ``tags`` ``key:value`` of each grade value.
``jsonl``
    One object per item: ``item_id, md5, sha1, sha256, pdq, pdq_quality, values, label,
    graded_at, taxonomy``.
``iwf-csv``
    ``md5,sha1,sha256,pdq,category,ncmec_category,age_band,ai_generated,interpol_baseline,
    graded_at,label`` (``category`` is the UK category; a value the taxonomy lacks is empty).

The URL list (:func:`list_urls`) is every distinct URL such an item was fetched from
(``report_items.source_url``) plus the URLs of the reports that brought it in, sorted.

Rows are read in keyset-paged batches (:data:`BATCH`), so exports of any size stream.
:func:`export` writes one export and, in the caller's transaction, records the
``export.<kind>`` audit event and emits the ``export`` webhook event. Documented in
docs/actions.md.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from tipline.audit import log as audit
from tipline.banks.bank import Entry
from tipline.banks.formats import write_hash_list
from tipline.errors import TiplineError
from tipline.signals.pdq import MIN_USABLE_QUALITY
from tipline.store.tables import Item, Report, ReportItem

HashFormat = Literal["te-csv", "jsonl", "iwf-csv"]
HASH_FORMATS: tuple[HashFormat, ...] = ("te-csv", "jsonl", "iwf-csv")
#: Everything :func:`export` writes (the audit action is ``export.<kind>``).
EXPORT_KINDS = (*HASH_FORMATS, "urls")
IWF_CSV_HEADER = (
    "md5",
    "sha1",
    "sha256",
    "pdq",
    "category",
    "ncmec_category",
    "age_band",
    "ai_generated",
    "interpol_baseline",
    "graded_at",
    "label",
)
#: Grade value keys behind the IWF columns (``category`` is the UK category).
_IWF_VALUE_KEYS = {
    "category": "uk_category",
    "ncmec_category": "ncmec_category",
    "age_band": "age_band",
    "ai_generated": "ai_generated",
    "interpol_baseline": "interpol_baseline",
}
#: Items read per query.
BATCH = 500
DEFAULT_COLLAB = "tipline"
MEDIA_TYPES = {
    "te-csv": "text/csv",
    "iwf-csv": "text/csv",
    "jsonl": "application/x-ndjson",
    "urls": "text/plain",
}
FILE_SUFFIXES = {"te-csv": ".csv", "iwf-csv": ".csv", "jsonl": ".jsonl", "urls": ".txt"}


class ExportError(TiplineError):
    """An export that cannot be made (unknown format)."""


def check_kind(kind: str) -> str:
    if kind not in EXPORT_KINDS:
        raise ExportError(f"unknown export format {kind!r} (formats: {', '.join(EXPORT_KINDS)})")
    return kind


def format_time(at: datetime) -> str:
    """UTC ISO 8601 with a ``Z``, to the second."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_final_actionable(item: Item) -> bool:
    """Has ``item`` a final grade that says it is actionable?"""
    grade = item.grade
    return (
        item.graded_at is not None and isinstance(grade, dict) and grade.get("actionable") is True
    )


@dataclass(frozen=True, slots=True)
class HashRecord:
    """One exported item: its hashes and its final grade."""

    item_id: int
    sha256: str
    md5: str | None
    sha1: str | None
    pdq: str | None
    pdq_quality: int | None
    values: dict[str, Any]
    label: str
    graded_at: datetime
    taxonomy: str = ""
    how: str = ""
    graders: list[str] = field(default_factory=list)

    @classmethod
    def from_item(cls, item: Item) -> HashRecord:
        grade = item.grade if isinstance(item.grade, dict) else {}
        values = grade.get("values")
        graders = grade.get("graders")
        assert item.graded_at is not None
        return cls(
            item_id=item.id,
            sha256=item.sha256,
            md5=item.md5,
            sha1=item.sha1,
            pdq=item.pdq,
            pdq_quality=item.pdq_quality,
            values=dict(values) if isinstance(values, dict) else {},
            label=str(grade.get("label") or ""),
            graded_at=item.graded_at,
            taxonomy=str(grade.get("taxonomy") or ""),
            how=str(grade.get("how") or ""),
            graders=[str(g) for g in graders] if isinstance(graders, list) else [],
        )

    @property
    def pdq_usable(self) -> bool:
        return bool(self.pdq) and (
            self.pdq_quality is None or self.pdq_quality >= MIN_USABLE_QUALITY
        )


def iter_final_items(
    session: Session, since: datetime | None = None, batch: int = BATCH
) -> Iterator[Item]:
    """Final-graded actionable items in id order, ``batch`` rows per query (keyset paging:
    no cursor stays open between batches, and memory stays flat)."""
    last_id = 0
    while True:
        stmt = (
            select(Item)
            .where(Item.graded_at.is_not(None), Item.id > last_id)
            .order_by(Item.id)
            .limit(batch)
        )
        if since is not None:
            stmt = stmt.where(Item.graded_at >= since)
        rows = list(session.scalars(stmt))
        if not rows:
            return
        for item in rows:
            if is_final_actionable(item):
                yield item
        last_id = rows[-1].id
        if len(rows) < batch:
            return


def iter_hash_records(
    session: Session, since: datetime | None = None, batch: int = BATCH
) -> Iterator[HashRecord]:
    for item in iter_final_items(session, since, batch):
        yield HashRecord.from_item(item)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def te_entries(record: HashRecord, collab: str = DEFAULT_COLLAB) -> list[Entry]:
    """The python-threatexchange rows of one item (``md5``; ``pdq`` when usable)."""
    tags = [f"{k}:{_cell(v)}".replace(" ", "_") for k, v in sorted(record.values.items())]
    out: list[Entry] = []
    if record.md5:
        out.append(Entry("", "md5", record.md5, label=record.label, source=collab, tags=tags))
    if record.pdq and record.pdq_usable:
        out.append(Entry("", "pdq", record.pdq, label=record.label, source=collab, tags=tags))
    return out


def jsonl_object(record: HashRecord) -> dict[str, Any]:
    return {
        "item_id": record.item_id,
        "md5": record.md5,
        "sha1": record.sha1,
        "sha256": record.sha256,
        "pdq": record.pdq,
        "pdq_quality": record.pdq_quality,
        "values": record.values,
        "label": record.label,
        "graded_at": format_time(record.graded_at),
        "taxonomy": record.taxonomy,
    }


def iwf_row(record: HashRecord) -> list[str]:
    v = record.values
    return [
        record.md5 or "",
        record.sha1 or "",
        record.sha256,
        record.pdq or "",
        _cell(v.get(_IWF_VALUE_KEYS["category"])),
        _cell(v.get(_IWF_VALUE_KEYS["ncmec_category"])),
        _cell(v.get(_IWF_VALUE_KEYS["age_band"])),
        _cell(v.get(_IWF_VALUE_KEYS["ai_generated"])),
        _cell(v.get(_IWF_VALUE_KEYS["interpol_baseline"])),
        format_time(record.graded_at),
        record.label,
    ]


@dataclass(slots=True)
class ExportCount:
    """What an export wrote: items (or URLs for ``urls``) and output rows."""

    items: int = 0
    rows: int = 0


def write_hashes(
    session: Session,
    fmt: str,
    out: TextIO,
    since: datetime | None = None,
    *,
    collab: str = DEFAULT_COLLAB,
    batch: int = BATCH,
) -> ExportCount:
    """Write the hash list in ``fmt`` (see the module docstring)."""
    check_kind(fmt)
    if fmt == "urls":
        raise ExportError("urls is not a hash list format (use write_urls)")
    count = ExportCount()
    records = iter_hash_records(session, since, batch)
    if fmt == "te-csv":

        def entries() -> Iterator[Entry]:
            for record in records:
                count.items += 1
                yield from te_entries(record, collab)

        count.rows = write_hash_list(entries(), "te-csv", out)
    elif fmt == "jsonl":
        for record in records:
            out.write(json.dumps(jsonl_object(record), ensure_ascii=False, sort_keys=True) + "\n")
            count.items += 1
        count.rows = count.items
    else:
        writer = csv.writer(out)
        writer.writerow(IWF_CSV_HEADER)
        for record in records:
            writer.writerow(iwf_row(record))
            count.items += 1
        count.rows = count.items
    return count


def list_urls(session: Session, since: datetime | None = None, batch: int = BATCH) -> list[str]:
    """Distinct URLs of the exported items (fetched-from URLs and their reports' URLs),
    sorted. URLs are few next to items, so the set is held in memory for sorting."""
    urls: set[str] = set()
    seen_reports: set[int] = set()
    ids: list[int] = []

    def flush() -> None:
        rows = session.execute(
            select(ReportItem.report_id, ReportItem.source_url).where(ReportItem.item_id.in_(ids))
        ).all()
        new_reports = set()
        for report_id, source_url in rows:
            if source_url:
                urls.add(source_url.strip())
            if report_id not in seen_reports:
                new_reports.add(report_id)
        if new_reports:
            seen_reports.update(new_reports)
            for report_urls in session.scalars(
                select(Report.urls).where(Report.id.in_(sorted(new_reports)))
            ):
                for u in report_urls or []:
                    if isinstance(u, str) and u.strip():
                        urls.add(u.strip())
        ids.clear()

    for item in iter_final_items(session, since, batch):
        ids.append(item.id)
        if len(ids) >= batch:
            flush()
    if ids:
        flush()
    urls.discard("")
    return sorted(urls)


def write_urls(
    session: Session, out: TextIO, since: datetime | None = None, *, batch: int = BATCH
) -> ExportCount:
    """The URL list, one per line (line breaks inside a URL are never written)."""
    n = 0
    for url in list_urls(session, since, batch):
        if "\n" in url or "\r" in url:
            continue
        out.write(url + "\n")
        n += 1
    return ExportCount(n, n)


def record_export(
    session: Session,
    kind: str,
    count: ExportCount,
    *,
    actor: str,
    ip: str | None = None,
    since: datetime | None = None,
    target_id: str | int | None = None,
) -> None:
    """The ``export.<kind>`` audit event and the ``export`` webhook event, in ``session``'s
    transaction (the webhook jobs are enqueued before the audit append, which must come last)."""
    from tipline.actions import webhooks

    details: dict[str, Any] = {"count": count.items, "rows": count.rows}
    if since is not None:
        details["since"] = format_time(since)
    event: dict[str, Any] = {"kind": kind, **details}
    if target_id is not None:
        event["target_id"] = target_id
    webhooks.emit(session, "export", event)
    audit.record(session, actor, f"export.{kind}", "export", target_id or kind, ip, details)


def export(
    session: Session,
    kind: str,
    out: TextIO,
    *,
    actor: str,
    ip: str | None = None,
    since: datetime | None = None,
    collab: str = DEFAULT_COLLAB,
) -> ExportCount:
    """Write one export (a hash list format or ``urls``) to ``out``, then record it (audit
    event ``export.<kind>`` with the count, webhook event ``export``) in ``session``'s
    transaction; the caller commits."""
    check_kind(kind)
    if kind == "urls":
        count = write_urls(session, out, since)
    else:
        count = write_hashes(session, kind, out, since, collab=collab)
    record_export(session, kind, count, actor=actor, ip=ip, since=since)
    return count


__all__ = [
    "EXPORT_KINDS",
    "FILE_SUFFIXES",
    "HASH_FORMATS",
    "IWF_CSV_HEADER",
    "MEDIA_TYPES",
    "ExportCount",
    "ExportError",
    "HashRecord",
    "check_kind",
    "export",
    "format_time",
    "is_final_actionable",
    "iter_final_items",
    "iter_hash_records",
    "iwf_row",
    "jsonl_object",
    "list_urls",
    "record_export",
    "te_entries",
    "write_hashes",
    "write_urls",
]
